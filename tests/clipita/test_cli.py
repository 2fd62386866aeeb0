"""The ``clipita`` command end to end: configs, fast_dev_run, bad values, and 2-process CPU DDP (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides

from clipita.cli import main
from clipita_core.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
TINY = tiny_overrides()


def run_clipita(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    # one thread per process: two DDP ranks x 2 OpenMP threads on 2 cores spin-wait each other ~10x slower
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    cmd = [sys.executable, "-m", "clipita.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    """One sample catalogue, sharded and feature-cached once for the CLI tests."""
    return tmp_path_factory.mktemp("clipita_work")


@pytest.mark.parametrize("name", ["clip_i", "clip_ia", "clip_ita", "title_only", "quickstart"])
def test_print_config_is_complete(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(EXPERIMENTS / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    for key in (
        "modalities",
        "fusion",
        "image_model",
        "text_model",
        "category_head",
        "attribute_pooling",
        "fusion_weights",
        "train_image_encoder",
        "route_novel_categories",
        "category_text",
    ):
        assert key in config["model"]["net"], key
    assert config["model"]["loss"]["class_path"].endswith("InfoNCELoss")
    for key in ("temperature", "lambda_weight", "learnable_temperature", "max_logit_scale"):
        assert key in config["model"]["loss"]["init_args"], key
    for key in ("lr", "encoder_lr", "train_category_level", "eval_max_rank"):
        assert key in config["model"], key
    for key in ("catalogue", "work_dir", "batch_size", "use_features", "unseen_fraction"):
        assert key in config["data"], key
    assert config["trainer"]["callbacks"]


def test_help_documents_options_from_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--model.net.fusion" in out and "``concat`` (the paper)" in out
    assert "--data.catalogue" in out


def test_fast_dev_run_through_clipita_fit(work_dir, tmp_path):
    result = run_clipita(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "quickstart.yaml"),
            *TINY,
            "--data.work_dir",
            str(work_dir),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.logger",
            "false",
            "--test_after_fit",
            "false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work_dir / "shards" / "seed0" / "manifest.json").is_file()
    assert len(list((work_dir / "features").iterdir())) == 2  # one image cache, one text cache


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (["--model.net.modalities", "[image, colour]"], "colour"),
        (["--model.loss.temperature", "-0.5"], "-0.5"),
        (["--model.net.image_weights", "/no/such/weights.pth"], "/no/such/weights.pth"),
        (["--model.net.fusion", "sum_of_everything"], "sum_of_everything"),
    ],
)
def test_bad_config_values_fail_at_start_naming_the_value(override, needle, tmp_path):
    result = run_clipita(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "quickstart.yaml"),
            *override,
            "--data.work_dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode != 0
    assert needle in result.stderr
    assert not (tmp_path / "shards").exists()  # failed before any work was done


@pytest.mark.slow
def test_two_process_cpu_ddp_fit(work_dir, tmp_path):
    result = run_clipita(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "quickstart.yaml"),
            *TINY,
            "--data.work_dir",
            str(work_dir),
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_epochs",
            "2",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs"),
            "--test_after_fit",
            "false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    metrics = next((tmp_path / "runs").rglob("metrics.csv")).read_text()
    assert "val/map@10" in metrics and "train/loss" in metrics


def test_fine_tuning_the_image_tower_on_raw_shards(work_dir, tmp_path):
    result = run_clipita(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "quickstart.yaml"),
            *TINY,
            "--data.work_dir",
            str(work_dir),
            "--data.use_features",
            "false",
            "--model.net.train_image_encoder",
            "true",
            "--model.net.image_weights",
            "none",
            "--trainer.fast_dev_run",
            "true",
            "--trainer.logger",
            "false",
            "--test_after_fit",
            "false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val retrieval metrics" in result.stdout


def test_a_folder_tree_catalogue_shards_and_trains(tmp_path):
    from PIL import Image

    root = tmp_path / "shop"
    colours = {
        "Shoes": (200, 30, 30),
        "Boots": (30, 30, 200),
        "Shirts": (30, 160, 30),
        "Jeans": (120, 120, 0),
    }
    for parent, leaves in {"Footwear": ["Shoes", "Boots"], "Apparel": ["Shirts", "Jeans"]}.items():
        for leaf in leaves:
            folder = root / parent / leaf
            folder.mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (32, 32), colours[leaf]).save(folder / f"{leaf.lower()}_{i:02d}.jpg")
    catalog = tmp_path / "shop.yaml"
    catalog.write_text("layout: folder_tree\nimage_root: shop\nname: shop\n")
    result = run_clipita(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "quickstart.yaml"),
            "--data.catalogue",
            str(catalog),
            "--data.work_dir",
            str(tmp_path / "work"),
            "--data.batch_size",
            "8",
            "--data.unseen_fraction",
            "0.25",
            "--model.net.image_size",
            "32",
            "--model.net.modalities",
            "[image]",  # a folder tree without metadata has no text: CLIP-ITA would stop at start
            "--trainer.max_epochs",
            "2",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--test_after_fit",
            "true",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = Manifest.read(tmp_path / "work" / "shards" / "seed0" / "manifest.json")
    assert manifest.sharded == 48 and not manifest.skipped
    assert "test retrieval metrics" in result.stdout
