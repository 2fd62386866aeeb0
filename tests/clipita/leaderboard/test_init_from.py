"""Fine-tuned leaderboard rows (``init_from``): stage 2 starts from an earlier row's choice run on the same split
seed; a row that names no row above it is a spec error naming both rows. The run itself (each seed's stage 2 records
the choice run of its own seed) is checked in ``test_public_block.py``, which runs this two-stage leaderboard."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import yaml

from clipita.leaderboard import load_spec
from clipita.leaderboard.runner import choice_checkpoint
from clipita.leaderboard.spec import RowSpec

REPO = Path(__file__).resolve().parents[3]
ADAPTIVE = str(REPO / "experiments" / "clip_ita_adaptive.yaml")
FINETUNE = str(REPO / "experiments" / "clip_ita_finetune.yaml")


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "lb.yaml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    ("rows", "needles"),
    [
        (  # the row it starts from comes later
            "[{name: tuned, fit: b.yaml, init_from: probe}, {name: probe, fit: a.yaml}]",
            ["'tuned'", "'probe'", "not a row above it"],
        ),
        ("[{name: tuned, fit: b.yaml, init_from: nowhere}]", ["'tuned'", "'nowhere'", "not a row above it"]),
        (  # a baseline trains nothing
            "[{name: bm, baseline: bm25}, {name: tuned, fit: b.yaml, init_from: bm}]",
            ["'tuned'", "'bm'", "trains nothing"],
        ),
        (
            "[{name: probe, fit: a.yaml}, {name: tuned, baseline: bm25, init_from: probe}]",
            ["needs a 'fit' row"],
        ),
    ],
)
def test_init_from_must_name_a_fit_row_above(tmp_path, rows, needles):
    with pytest.raises(ValueError) as error:
        load_spec(_write(tmp_path, f"rows: {rows}"))
    for needle in needles:
        assert needle in str(error.value)


def test_fashion_fine_tuned_row_starts_from_the_adaptive_row():
    spec = load_spec(str(REPO / "experiments" / "leaderboards" / "fashion.yaml"))
    row = spec.row("CLIP-ITA fine-tuned")
    assert row.fit == "experiments/clip_ita_finetune.yaml" and row.init_from == "CLIP-ITA adaptive"
    names = [r.name for r in spec.rows]
    assert names.index("CLIP-ITA adaptive") < names.index("CLIP-ITA fine-tuned")
    source = choice_checkpoint(Path("runs"), spec.row("CLIP-ITA adaptive"), 4)
    assert source == Path(
        "runs/clip-ita-adaptive/seed4/checkpoints/last.ckpt"
    )  # no run yet: the path it names


def test_stage_two_starts_from_the_checkpoint_stage_one_tested(tmp_path):
    """Not the choice run's last epoch: the best checkpoint its ModelCheckpoint kept (what its test scored)."""
    folder = tmp_path / "probe" / "seed0" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("last.ckpt", "epoch03-map0.7000.ckpt"):
        (folder / name).write_bytes(b"")
    assert choice_checkpoint(tmp_path, RowSpec("probe"), 0) == folder / "epoch03-map0.7000.ckpt"


def stages_leaderboard(
    tmp_path: Path, seeds: list[int], refit_tuned: bool = False, grid: tuple[float, ...] = (0.0, 1.0)
) -> str:
    """A two-row leaderboard on the sample catalogue: the adaptive recipe (with its refit), then the fine-tune
    recipe starting from it, with a tiny timm test tower whose "pretrained" weights are a file (both stages build
    the same tower)."""
    torch.manual_seed(0)
    weights = tmp_path / "pretrained.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    tiny = {
        "data.catalogue": "sample", "data.sample_products": 160, "data.batch_size": 16, "data.num_workers": 0,
        "data.encode_workers": 0, "data.work_dir": str(tmp_path / "work"),
        "model.net.image_model": "test_efficientnet", "model.net.image_weights": str(weights),
        "model.net.image_size": 64, "data.train_image_size": None, "trainer.max_epochs": 1, "trainer.accelerator": "cpu",
        "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False,
    }  # fmt: skip
    tune = {
        "model.net.train_image_blocks": 1, "model.warmup_steps": 0, "model.wise_ft_grid": list(grid),
        "trainer.accumulate_grad_batches": 1, "refit_after_choice": refit_tuned,
    }  # fmt: skip

    def tokens(options: dict) -> list[str]:
        return [
            t for k, v in options.items() for t in (f"--{k}", yaml.safe_dump(v).strip().removesuffix("\n..."))
        ]

    spec = {
        "name": "stages",
        "base_config": ADAPTIVE,
        "split_seeds": seeds,
        "shared_overrides": tokens(tiny),
        "rows": [
            {"name": "probe", "fit": ADAPTIVE},
            {"name": "tuned", "fit": FINETUNE, "init_from": "probe", "overrides": tokens(tune)},
        ],
    }
    return _write(tmp_path, yaml.safe_dump(spec))


@pytest.mark.slow
def test_a_stage_two_refit_starts_from_stage_one_refit(tmp_path):
    """The stage-2 fit starts from stage 1's choice run (it validates on the pseudo-novel leaves); its refit chooses
    nothing and starts from stage 1's refit, so alpha 0 would serve exactly what the head-only row serves."""
    from clipita.leaderboard import leaderboard
    from lightning_modules.checkpointing import tested_checkpoint

    runs = tmp_path / "runs"
    leaderboard(
        stages_leaderboard(tmp_path, [0], refit_tuned=True),
        output_dir=str(tmp_path / "out"),
        runs_dir=str(runs),
    )
    fit = yaml.safe_load((runs / "tuned" / "seed0" / "config.yaml").read_text())
    refit = yaml.safe_load((runs / "tuned" / "seed0_refit" / "config.yaml").read_text())
    assert fit["model"]["init_from"] == str(tested_checkpoint(runs / "probe" / "seed0"))
    assert refit["model"]["init_from"] == str(tested_checkpoint(runs / "probe" / "seed0_refit"))
    assert Path(refit["model"]["init_from"]).parents[1].name == "seed0_refit"
    assert Path(fit["model"]["init_from"]).parents[1].name == "seed0"


@pytest.mark.slow
def test_a_stage_two_refit_that_would_serve_stage_one_trains_nothing(tmp_path):
    """WiSE-FT alpha 0 chosen (a grid of 0 alone): the refit would train a fine-tuned side it never serves, so it
    trains no step and keeps stage 1's refit as its checkpoint; the row is then the head-only row's model."""
    import json

    from clipita.leaderboard import leaderboard
    from lightning_modules.checkpointing import read_checkpoint, tested_checkpoint

    runs = tmp_path / "runs"
    leaderboard(
        stages_leaderboard(tmp_path, [0], refit_tuned=True, grid=(0.0,)),
        output_dir=str(tmp_path / "out"),
        runs_dir=str(runs),
    )
    served = tested_checkpoint(runs / "tuned" / "seed0_refit")
    assert served is not None and served.name == "last.ckpt"
    tuned, probe = read_checkpoint(served), read_checkpoint(tested_checkpoint(runs / "probe" / "seed0_refit"))
    assert tuned["global_step"] == 0
    heads = [k for k in probe["state_dict"] if k.startswith("net.")]  # the loss's temperature ranks nothing
    assert heads
    for key in heads:  # the weights served are stage 1's refit's, untouched
        torch.testing.assert_close(tuned["state_dict"][key], probe["state_dict"][key], rtol=0, atol=0)
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "leaderboard.json").read_text())["rows"]}
    same = [rows[n]["summary"]["all"]["map@10"]["mean"] for n in ("tuned", "probe")]
    assert same[0] == pytest.approx(
        same[1], abs=0.02
    )  # raw 64-px images vs the float16 feature cache of them
