"""The public-protocol block (issue 19.7): plain category labels, the gallery every product the row did not train on,
P@1 / P@10 / MRR@10 equal to torchmetrics on the same scores; computed at the end of a run and again afterwards from
the kept checkpoints (``public_only``) without training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_init_from import stages_leaderboard
from torchmetrics.retrieval import RetrievalMRR, RetrievalPrecision

from clipita.leaderboard import RowSpec, leaderboard, load_spec
from clipita.leaderboard.public import (
    PUBLIC_TITLE,
    level_groups,
    public_metrics,
    public_scores,
    served_checkpoint,
    trained_products,
)
from clipita.leaderboard.runner import choice_checkpoint
from clipita.retrieval.shard_metadata import products_frame
from datamodules.catalogue_datamodule import CatalogueDataModule

REFERENCE = {
    "p@1": lambda: RetrievalPrecision(top_k=1, empty_target_action="skip"),
    "p@10": lambda: RetrievalPrecision(top_k=10, empty_target_action="skip"),
    "mrr@10": lambda: RetrievalMRR(top_k=10, empty_target_action="skip"),
}


def reference(scores: torch.Tensor, relevant: torch.Tensor, mask: np.ndarray) -> dict[str, float]:
    """torchmetrics' mean over the masked queries that have a relevant product."""
    queries = torch.as_tensor(np.flatnonzero(mask))
    preds, target = scores[queries].flatten(), relevant[queries].flatten()
    indexes = queries[:, None].expand(-1, scores.shape[1]).flatten()
    return {m: float(make()(preds, target, indexes=indexes)) for m, make in REFERENCE.items()}


def test_public_metrics_equal_torchmetrics_per_level():
    generator = torch.Generator().manual_seed(0)
    tree = [("A",), ("B",), ("A", "a1"), ("A", "a2"), ("B", "b1"), ("A", "a1", "x"), ("A", "a1", "y")]
    scores = torch.rand(len(tree), 40, generator=generator)
    relevant = torch.rand(len(tree), 40, generator=generator) < 0.2
    relevant[4] = False  # a query with no relevant product: left out, as torchmetrics' "skip"
    values = public_metrics(scores, relevant)
    assert np.isnan(values["p@1"][4]) and np.isfinite(values["p@1"][:4]).all()
    groups = level_groups(tree)
    assert {g: m.tolist() for g, m in groups.items()} == {
        "all": [True] * 7,
        "general": [True, True, False, False, False, False, False],
        "level-2": [False, False, True, True, True, False, False],
        "specific": [False, False, False, True, True, True, True],
    }
    for mask in groups.values():
        expected = reference(scores, relevant, mask)
        for metric, value in expected.items():
            assert np.nanmean(values[metric][mask]) == pytest.approx(value, abs=1e-6), metric


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        ("public_block: {rows: [nope]}", "is not a row"),
        ("public_block: {rows: [bm]}", "must be a 'fit' row"),
        ("public_block: [probe]", "public_block must be"),
    ],
)
def test_bad_public_block_fails_naming_the_row(tmp_path, block, needle):
    path = tmp_path / "lb.yaml"
    path.write_text(f"rows: [{{name: bm, baseline: bm25}}, {{name: probe, fit: a.yaml}}]\n{block}\n")
    with pytest.raises(ValueError, match=needle):
        load_spec(str(path))


def split_products(tmp_path: Path, seed: int, split: str, pseudo_novel: float) -> set[str]:
    """A split's product ids of the tiny sample, read from its shards (independently of the block's code)."""
    dm = CatalogueDataModule(
        catalogue="sample", sample_products=160, work_dir=str(tmp_path / "work"), split_seed=seed,
        pseudo_novel_fraction=pseudo_novel,
    )  # fmt: skip
    dm.read_catalogue()
    return {str(i) for i in products_frame(dm.manifest, dm.shard_dir, [split])["id"]}


@pytest.mark.slow
def test_public_block_on_the_sample_then_again_from_the_kept_checkpoints(tmp_path):
    config = Path(stages_leaderboard(tmp_path, [0, 1]))
    spec = yaml.safe_load(config.read_text())
    spec["public_block"] = {"rows": ["probe", "tuned"]}
    config.write_text(yaml.safe_dump(spec))
    runs, out = tmp_path / "runs", tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="'tuned' starts from row 'probe'"):  # nothing kept yet
        leaderboard(str(config), output_dir=str(out), runs_dir=str(runs), rows=["tuned"])
    paths = leaderboard(str(config), output_dir=str(out), runs_dir=str(runs))
    for seed in (0, 1):
        # stage 2 starts from the checkpoint the probe's choice run tested on its own split seed (its best: what the
        # last checkpoint's ModelCheckpoint state names), not from its refit
        recorded = yaml.safe_load((runs / "tuned" / f"seed{seed}" / "config.yaml").read_text())
        folder = runs / "probe" / f"seed{seed}" / "checkpoints"
        callbacks = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
        (best,) = [Path(v["best_model_path"]).name for k, v in callbacks.items() if "ModelCheckpoint" in k]
        assert recorded["model"]["init_from"] == str(folder / best) and (folder / best).is_file()
        assert recorded["data"]["split_seed"] == seed and (runs / "probe" / f"seed{seed}_refit").is_dir()
    document = json.loads(Path(paths["public"]).read_text())
    assert f"## {PUBLIC_TITLE}" in Path(paths["markdown"]).read_text()
    loaded = load_spec(str(config))
    for name in ("probe", "tuned"):
        row = loaded.row(name)
        for seed in (0, 1):
            entry = document["rows"][name]["per_seed"][str(seed)]
            ckpt = served_checkpoint(runs, row, seed)
            # the adaptive probe serves its refit; the tuned row (no refit) its own run
            assert ckpt.parent.parent.name == (f"seed{seed}_refit" if name == "probe" else f"seed{seed}")
            assert entry["checkpoint"] == str(ckpt)
            # the gallery: val + test of the served split, none of the training products of any stage. The probe
            # serves its refit (pseudo-novel 0: the pseudo-novel leaves trained); the tuned row serves its own run
            # (pseudo-novel 0.15, as the probe's choice run it started from: those leaves never trained)
            fraction = 0.0 if name == "probe" else 0.15
            gallery = set(
                json.loads((runs / row.slug / "public" / f"seed{seed}" / "gallery.json").read_text())
            )
            trained = split_products(tmp_path, seed, "train", fraction)
            assert gallery and not gallery & trained
            held_out = split_products(tmp_path, seed, "val", fraction) | split_products(
                tmp_path, seed, "test", 0.0
            )
            assert gallery == held_out and entry["gallery"]["size"] == len(held_out)
            assert entry["gallery"]["trained_products"] == len(trained)
            if name == "tuned":  # its chain: the tuned run, then the probe's choice run it started from
                assert entry["trained_from"][1] == str(choice_checkpoint(runs, RowSpec("probe"), seed))
                assert Path(entry["trained_from"][1]).parent.parent == runs / "probe" / f"seed{seed}"
            # the numbers: torchmetrics on the same scores
            folders = [runs / row.slug / "public" / f"seed{seed}" / split for split in ("val", "test")]
            scores, relevant, tree, ids, _ = public_scores(ckpt, folders, trained_products(ckpt))
            assert set(ids) == gallery and scores.shape == (len(tree), len(gallery))
            for level, mask in level_groups(tree).items():
                for metric, value in reference(scores, relevant, mask).items():
                    assert entry["levels"][level][metric] == pytest.approx(value, abs=1e-6), (
                        name,
                        seed,
                        level,
                    )
        summary = document["rows"][name]["summary"]["all"]["p@10"]
        per_seed = [document["rows"][name]["per_seed"][s]["levels"]["all"]["p@10"] for s in ("0", "1")]
        assert summary["mean"] == pytest.approx(np.mean(per_seed)) and summary["std"] == pytest.approx(
            np.std(per_seed, ddof=1)
        )

    # afterwards, from the kept checkpoints: nothing trains, the same numbers come back
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.ckpt")}
    Path(paths["public"]).unlink()
    again = leaderboard(str(config), output_dir=str(out), runs_dir=str(runs), public_only=True)
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.ckpt")} == stamps
    assert json.loads(Path(again["public"]).read_text())["rows"] == document["rows"]
    assert f"## {PUBLIC_TITLE}" in Path(again["markdown"]).read_text()

    # the tuned row alone starts from the probe's kept choice run (the probe does not train again)
    probe = {p: t for p, t in stamps.items() if "probe" in p.parts}
    leaderboard(
        str(config), output_dir=str(tmp_path / "out2"), runs_dir=str(runs), rows=["tuned"], split_seeds=[1]
    )
    assert {p: p.stat().st_mtime_ns for p in probe} == probe
    assert (runs / "tuned" / "seed1" / "checkpoints" / "last.ckpt").stat().st_mtime_ns > max(stamps.values())
