"""``clipita encode``: build (or finish) the frozen-encoder feature cache of a fit config as a Lightning predict job.

    clipita encode experiments/clip_ita.yaml --devices 2 --strategy ddp --num_workers 4

Shards are split across ranks (``devices`` x ``num_nodes``; under torchrun or SLURM the launcher's ranks are used
unchanged) and, within a rank, across ``num_workers`` decoding workers. Each rank writes the feature shards of its
input shards; a killed encode resumes where it stopped, and the cache is marked complete once every shard is there.
"""

from __future__ import annotations

import json
import os

from datamodules.features import describe


def _launcher_rank() -> int:
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def encode(
    fit_config: str,
    overrides: list[str] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    accelerator: str = "auto",
) -> None:
    """Shard the config's catalogue if needed and encode every product once with the config's frozen encoders.

    A cache built with the same encoders from the same shards is reused; another encoder config or re-written
    shards get a new cache folder (the old one is never served stale).

    Args:
        fit_config: a ``clipita fit`` YAML (e.g. ``experiments/clip_ita.yaml``); its ``model`` section names the
            encoders and its ``data`` section the catalogue and ``work_dir``.
        overrides: extra ``--key value`` overrides, as for ``clipita fit`` (e.g. ``["--data.work_dir", "w"]``).
        batch_size: images per encoder forward pass (a batch never spans two shards); default: the config's
            ``data.encode_batch_size``, as a fit's own encoding uses.
        num_workers: image-decoding worker processes per rank; default: the config's ``data.encode_workers``, as
            a fit's own encoding uses.
        devices: devices per node (the Trainer's ``devices``; with ``strategy: ddp`` one rank each).
        num_nodes: nodes (the Trainer's ``num_nodes``).
        strategy: the Trainer's strategy (``ddp`` for several ranks; ``auto`` picks it when devices > 1).
        accelerator: the Trainer's accelerator (``cpu``, ``gpu``, ``auto``).
    """
    import lightning as L

    from clipita.factory import build
    from datamodules.feature_encoding import EncodeJob

    dm = build(["--config", fit_config, *(overrides or [])]).datamodule
    image_encoder, text_encoder = dm.towers()  # the model's network, linked by the factory
    manifest = dm.ensure_shards(wait=_launcher_rank() != 0)
    job = EncodeJob(
        str(dm.shard_dir),
        manifest,
        str(dm.features_root),
        image_encoder,
        text_encoder,
        batch_size=dm.encode_options.batch_size if batch_size is None else batch_size,
        num_workers=dm.encode_options.num_workers if num_workers is None else num_workers,
        tokenizer=dm.lexical_tokenizer(),  # the model's lexical signal, when it has one: token ids are stored too
    )
    trainer = L.Trainer(
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        accelerator=accelerator,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the job splits shards across ranks itself
    )
    trainer.predict(job, return_predictions=False)
    if trainer.is_global_zero:
        print(json.dumps(describe(list(job.stores.values())), indent=2))
