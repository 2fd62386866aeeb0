"""Runs every row of a leaderboard on every split seed: baselines, fitted configs and checkpoints, one harness."""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from clipita.experiment import read_fit_config, run_folder_overrides
from datamodules.leakage import TEXT_FIELDS  # the product text a row can read
from lightning_modules.checkpointing import tested_checkpoint

from .consistency import add_consistency
from .run import LeaderboardRun, RowSeedResult, SeedContext, _context, _numpy_per_query

# (key, column label, ceiling key shown beside it)
from .spec import ERROR_KS, LeaderboardSpec, RowSpec, resolve_path


def _test_products(datamodule: Any) -> tuple[list[str], Any]:
    """The test split's product ids and ancestor-id rows in the order the test ranked them: the feature rows', or
    on the raw-image path (a trained tower) the test loader's (shard order when it has no workers)."""
    if "test" in datamodule.datasets:
        test = datamodule.datasets["test"]
        return list(test.product_id), test.category_ids
    from clipita.retrieval.shard_metadata import products_frame

    if datamodule.hparams.num_workers:
        batches = list(datamodule.test_dataloader())
        ids = [str(i) for b in batches for i in b["product_id"]]
        return ids, torch.cat([b["category_ids"] for b in batches])
    frame = products_frame(datamodule.manifest, datamodule.shard_dir, ["test"])
    paths = [json.loads(p) for p in frame["category_path"]]
    return [str(i) for i in frame["id"]], torch.as_tensor(datamodule.tree.ancestor_matrix(paths))


def run_folder(runs_dir: Path, row: RowSpec, seed: int) -> Path:
    """A trained row's run folder on one split seed (its choice run's, with ``refit_after_choice``):
    ``<runs_dir>/<row slug>/seed<seed>`` (:func:`clipita.experiment.run_folder_overrides`)."""
    return Path(runs_dir) / row.slug / f"seed{seed}"


def refit_folder(runs_dir: Path, row: RowSpec, seed: int) -> Path:
    """The refit's sibling run folder (``<version>_refit``, :func:`clipita.refit.refit_version_overrides`)."""
    return Path(runs_dir) / row.slug / f"seed{seed}_refit"


def choice_checkpoint(runs_dir: Path, row: RowSpec, seed: int) -> Path:
    """The checkpoint a row's choice run on one split seed tested (its best, :func:`tested_checkpoint`): what a row
    with ``init_from`` starts from (experiments/clip_ita_finetune.yaml: stage 2 starts from the stage-1 network that
    was validated and tested, never from its refit, which trained on the pseudo-novel leaves stage 2 validates on).
    ``<run>/checkpoints/last.ckpt`` when the run folder holds no checkpoint yet (the message names it)."""
    folder = run_folder(runs_dir, row, seed)
    return tested_checkpoint(folder) or folder / "checkpoints" / "last.ckpt"


def _manifest_leakage(datamodule: Any) -> dict[str, Any]:
    manifest = getattr(datamodule, "manifest", None)
    return manifest.leakage if manifest is not None else {}


def _model_text(module: Any) -> list[str]:
    """The product text fields a trained row reads: the text its network's towers fuse, the title when it mixes in
    or routes through the frozen title embedding (:func:`clipita.modalities.required_modalities`), and the title and
    attribute values its BM25 signal tokenizes (``net.lexical``)."""
    from clipita.modalities import required_modalities

    net = module.net  # the LightningModule's network (ClipItaModule.net)
    fields = set(required_modalities(net))
    if getattr(net, "lexical", None) is not None:
        fields |= {"title", "attributes"}
    return [f for f in TEXT_FIELDS if f in fields]


class _Runner:
    """Runs every row of a spec on every split seed."""

    def __init__(self, spec: LeaderboardSpec, overrides: Sequence[str], runs_dir: Path, log=print) -> None:
        self.spec, self.overrides, self.runs_dir, self.log = spec, list(overrides), runs_dir, log
        self.galleries: dict[tuple, Any] = {}
        self.leakage: dict[str, Any] = {}
        self.row_text: dict[str, list[str]] = {}

    def seed_overrides(self, seed: int, trained: bool) -> list[str]:
        out = ["--data.split_seed", str(seed)]
        if trained and self.spec.vary_training_seed:
            out += ["--seed_everything", str(seed)]
        return out

    def gallery(self, row: RowSpec, seed: int):
        from clipita.baselines import load_test_gallery

        config = resolve_path(self.spec.base_config) if self.spec.base_config else None
        overrides = [
            *self.spec.shared_overrides, *row.overrides, *self.overrides, *self.seed_overrides(seed, False),
            "--trainer.logger", "false",
        ]  # fmt: skip
        key = (config, tuple(overrides))
        if key not in self.galleries:
            self.galleries = {key: load_test_gallery(config, overrides)}  # keep one gallery in memory
        return self.galleries[key]

    def baseline(self, row: RowSpec, seed: int) -> tuple[RowSeedResult, SeedContext]:
        from clipita.baselines import BASELINES, run_baseline

        gallery = self.gallery(row, seed)
        self.row_text[row.name] = list(BASELINES[row.baseline].reads)
        self.leakage = self.leakage or dict(getattr(gallery, "leakage", {}) or {})
        result = run_baseline(row.baseline, gallery, row.options)
        context = SeedContext(
            seed=seed,
            paths=list(gallery.tree.paths),
            groups={k: v.numpy().astype(bool) for k, v in gallery.settings.items()},
            category_ids=gallery.category_ids.numpy(),
            product_ids=list(gallery.product_ids),
        )
        top = result.ranking[:, : max(ERROR_KS)].numpy()
        per_query = add_consistency(
            _numpy_per_query(result.per_query), result.ranking, context.paths, context.groups["specific"]
        )
        return RowSeedResult(per_query, top, dict(result.metrics)), context

    def trained(self, row: RowSpec, seed: int) -> tuple[RowSeedResult, SeedContext]:
        from clipita.experiment import fit_and_test
        from clipita.modalities import check_modalities

        config = resolve_path(row.fit)
        if row.checkpoint:  # test only: no logs, and never touch a folder the checkpoint may live in
            logging = [
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(self.runs_dir / "tests"),
            ]
        else:  # a fresh run folder per row and seed (a previous leaderboard run's checkpoints are replaced)
            for folder in (run_folder(self.runs_dir, row, seed), refit_folder(self.runs_dir, row, seed)):
                shutil.rmtree(folder, ignore_errors=True)
            logging = run_folder_overrides(read_fit_config(config), self.runs_dir, row.slug, f"seed{seed}")
        stage = []
        if row.init_from:  # stage 2 starts from the other row's choice run on this split seed (not its refit)
            source = choice_checkpoint(self.runs_dir, RowSpec(row.init_from), seed)  # run here or kept
            if not source.is_file():
                raise FileNotFoundError(
                    f"row {row.name!r} starts from row {row.init_from!r} (init_from), but {source} does not exist"
                )
            stage = ["--model.init_from", str(source)]
        overrides = [
            *logging,
            *self.spec.shared_overrides, *row.overrides, *stage, *self.overrides, *self.seed_overrides(seed, True),
        ]  # fmt: skip
        if row.checkpoint:
            from clipita.factory import build

            checkpoint = resolve_path(row.checkpoint.format(seed=seed))
            built = build(["--config", config, *overrides])
            module, datamodule = built.module, built.datamodule
            check_modalities(module, datamodule)
            built.trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)
            logged = {k: float(v) for k, v in built.trainer.callback_metrics.items() if k.startswith("test/")}
        else:
            run = fit_and_test(config, overrides)
            module, datamodule, logged = run.module, run.datamodule, run.test
        self.row_text[row.name] = _model_text(module)
        self.leakage = self.leakage or _manifest_leakage(datamodule)
        per_query = _numpy_per_query(module.per_query["test"])
        top = module.rankings["test"][:, : max(ERROR_KS)].cpu().numpy()
        context = _context(seed, module.protocol.settings, datamodule, *_test_products(datamodule))
        per_query = add_consistency(
            per_query, module.rankings["test"], context.paths, context.groups["specific"]
        )
        logged = {k.removeprefix("test/"): v for k, v in logged.items()}
        return RowSeedResult(per_query, top, logged), context

    def run(
        self, rows: Sequence[RowSpec], on_seed: Callable[[LeaderboardRun, list[int]], None] | None = None
    ) -> LeaderboardRun:
        """Every row on every split seed; ``on_seed(run, seeds_done)`` after each seed but the last."""
        from clipita.baselines import BaselineNotRun
        from clipita.modalities import MissingModalityError

        out = LeaderboardRun(spec=self.spec)
        for i, seed in enumerate(self.spec.split_seeds):
            if i and on_seed is not None:
                on_seed(out, self.spec.split_seeds[:i])
            for row in rows:
                if row.name in out.not_run:
                    continue
                self.log(f"[leaderboard {self.spec.name}] split seed {seed}: {row.name} ({row.kind})")
                start = time.perf_counter()
                try:
                    result, context = self.baseline(row, seed) if row.baseline else self.trained(row, seed)
                except (
                    BaselineNotRun,
                    MissingModalityError,
                ) as reason:  # e.g. title rows on a titleless catalogue
                    out.not_run[row.name] = f"not run: {reason}"
                    self.log(f"[leaderboard {self.spec.name}] {row.name}: {out.not_run[row.name]}")
                    continue
                result.wall_s = time.perf_counter() - start
                known = out.contexts.setdefault(seed, context)
                problem = known.same_harness(context)
                if problem:
                    raise ValueError(
                        f"row {row.name!r} on split seed {seed} is not evaluated like the rows before it: {problem}; "
                        "row overrides must not change the data (catalogue, split options, work_dir)"
                    )
                out.results.setdefault(row.name, {})[seed] = result
                gc.collect()
        out.leakage, out.row_text = self.leakage, dict(self.row_text)
        return out
