"""Extending clipita through its registries alone (ARCHITECTURE.md, "Where to add a ..."): a toy fusion and a toy
baseline, each one definition plus one registry line made here, with no other file edited, run in a tiny
leaderboard: the fusion through ``--model.net.fusion toy`` in a fitted row, the baseline in a baseline row. A toy
loss is refused by the module until its one ``LOSSES`` line is added."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from clipita.baselines import BASELINES, Baseline, TestGallery
from clipita.cli import main
from clipita.leaderboard import leaderboard
from lightning_modules import ClipIta, ClipItaModule, InfoNCELoss, load_model
from lightning_modules.components.fusion import FUSIONS
from lightning_modules.components.projection_head import HEAD, HeadConfig
from lightning_modules.losses import LOSSES

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


class ToyFusion(nn.Module):
    """The mean of one linear map per modality (a modality missing for a product contributes zeros)."""

    training_calls = 0  # forward passes in training mode, over every instance

    def __init__(
        self,
        input_dims: dict[str, int],
        embed_dim: int,
        head: HeadConfig = HEAD,
    ) -> None:
        super().__init__()
        self.maps = nn.ModuleDict({m: nn.Linear(d, embed_dim) for m, d in input_dims.items()})

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training:
            ToyFusion.training_calls += 1
        parts = []
        for m, linear in self.maps.items():
            out = linear(features[m])
            if m in present:
                out = out * present[m].to(out.dtype).unsqueeze(-1)
            parts.append(out)
        return torch.stack(parts).mean(dim=0)


def oracle_chunks(gallery: TestGallery, chunk_size: int = 16):
    """Score 1 where the product lies under the query's category (its ``-1``-padded ancestor ids name the
    query), else 0: a perfect ranking, in ``[Q, c]`` blocks."""
    q = gallery.num_queries
    ids = gallery.category_ids.long()
    under = torch.zeros(gallery.num_products, q + 1).scatter_(1, torch.where(ids >= 0, ids, q), 1.0)
    yield from under[:, :q].T.split(chunk_size, dim=1)


@pytest.fixture
def toys():
    """The two registry lines (undone afterwards: the registries are process-wide)."""
    FUSIONS.add("toy", ToyFusion)
    BASELINES.add("oracle", Baseline(oracle_chunks, reads=("title",)))
    yield
    FUSIONS.remove("toy")
    BASELINES.remove("oracle")


def test_a_registered_fusion_is_a_config_value_and_an_unregistered_one_is_refused(toys, capsys):
    fit = ["fit", "--config", str(QUICKSTART), "--model.net.fusion", "toy", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(fit)
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["net"]["fusion"] == "toy"
    FUSIONS.remove("toy")
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(fit)
        assert exit_info.value.code != 0
        err = capsys.readouterr().err
        assert "toy" in err and "weighted_sum" in err  # the value and the registered names
    finally:
        FUSIONS.add("toy", ToyFusion)


@pytest.mark.slow
def test_a_toy_fusion_and_a_toy_baseline_run_in_a_tiny_leaderboard(toys, tmp_path):
    config = tmp_path / "toys.yaml"
    config.write_text(
        f"name: toys\nbase_config: {QUICKSTART}\nsplit_seeds: [0]\nreference: toy fusion\n"
        "shared_overrides: [--data.sample_products, '120', --data.batch_size, '16', --model.net.image_size, '64',"
        " --trainer.max_epochs, '1', --trainer.enable_progress_bar, 'false', --trainer.enable_model_summary,"
        " 'false']\n"
        "rows:\n"
        "  - {name: oracle, baseline: oracle}\n"
        f"  - {{name: toy fusion, fit: {QUICKSTART}, overrides: [--model.net.fusion, toy]}}\n"
    )
    ToyFusion.training_calls = 0
    paths = leaderboard(
        str(config),
        output_dir=str(tmp_path / "out"),
        overrides=["--data.work_dir", str(tmp_path / "work")],
        runs_dir=str(tmp_path / "runs"),
    )
    rows = {r["name"]: r for r in json.loads(Path(paths["json"]).read_text())["rows"]}

    # the toy baseline: scored in the leaderboard's harness, its registry entry's text fields in the leakage record
    for setting in ("all", "specific"):
        assert rows["oracle"]["summary"][setting]["map@10"]["values"] == [pytest.approx(1.0)], setting
    run = json.loads((tmp_path / "out" / "leaderboard_run.json").read_text())
    assert run["row_text"]["oracle"] == ["title"]

    # the toy fusion: trained, tested and saved as the network's fusion; the checkpoint rebuilds it by name
    assert ToyFusion.training_calls > 0
    fitted = rows["toy fusion"]["summary"]["all"]["map@10"]["values"]
    assert len(fitted) == 1 and 0.0 <= fitted[0] <= 1.0
    (checkpoint,) = (tmp_path / "runs" / "toy-fusion" / "seed0").rglob("last.ckpt")
    net = load_model(checkpoint)
    assert isinstance(net.fusion, ToyFusion) and net.config["fusion"] == "toy"


class ToyLoss(InfoNCELoss):
    """InfoNCE, doubled (a loss of its own class, for the registry)."""

    def forward(self, products: torch.Tensor, categories: torch.Tensor, **extra: object) -> torch.Tensor:
        return 2.0 * super().forward(products, categories, **extra)


def test_a_loss_class_is_accepted_once_registered():
    net = ClipIta(modalities=["title"], embed_dim=8, hidden_dim=8)
    with pytest.raises(ValueError, match=r"unknown loss 'ToyLoss'; expected one of \['InfoNCELoss'"):
        ClipItaModule(net, ToyLoss())
    LOSSES.add("ToyLoss", ToyLoss)
    try:
        assert isinstance(ClipItaModule(net, ToyLoss()).loss, ToyLoss)
    finally:
        LOSSES.remove("ToyLoss")
