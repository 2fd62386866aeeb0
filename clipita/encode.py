"""``clipita encode``: build (or confirm fresh) the frozen-encoder feature cache of a fit config."""

from __future__ import annotations

import json

from datamodules.feature_cache import build_feature_cache, describe


def encode(
    fit_config: str, overrides: list[str] | None = None, batch_size: int = 64, num_workers: int = 1
) -> None:
    """Shard the config's catalogue if needed and encode every product once with the config's frozen encoders.

    A cache built with the same encoders from the same shards is reused; another encoder config or re-written
    shards get a new cache folder (the old one is never served stale).

    Args:
        fit_config: a ``clipita fit`` YAML (e.g. ``experiments/clip_ita.yaml``); its ``model`` section names the encoders
            and its ``data`` section the catalogue and ``work_dir``.
        overrides: extra ``--key value`` overrides, as for ``clipita fit`` (e.g. ``["--data.work_dir", "w"]``).
        batch_size: images per encoder forward pass.
        num_workers: image-decoding worker processes (0 or 1).
    """
    from clipita.cli import make_cli

    cli = make_cli(["--config", fit_config, *(overrides or [])], run=False)
    dm, model = cli.datamodule, cli.model.model
    manifest = dm.ensure_shards()
    folders = build_feature_cache(
        str(dm.shard_dir),
        manifest,
        model.text_encoder,
        str(dm.features_root),
        model.image_encoder,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    print(json.dumps(describe(folders), indent=2))
