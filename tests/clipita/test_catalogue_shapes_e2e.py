"""End to end on catalogues of other shapes (issue 12): a titleless table, a folder tree with class-named files
(with and without ``split_folders``), ids and category names of any text, and a catalogue with no surviving row.

Every catalogue is generated in ``tmp_path``; models are the shared tiny config with timm's random ``test_efficientnet``
at 32 px (:func:`tiny_args`, the one place this file sets model options). The fast tests check the pieces in-process;
the ``slow`` ones run ``clipita`` as a user would (``python -m clipita.cli`` in a subprocess).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import tiny_overrides
from PIL import Image

from clipita.leaderboard import leaderboard
from clipita.modalities import MissingModalityError, check_modalities, missing_modality_message
from clipita.retrieval.search import resolve_category
from clipita_core.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")
NO_TITLES = "not run: the catalogue has no titles"


# ------------------------------------------------------------------------------------------------ helpers
def tiny_args(work_dir: Path, extra: dict | None = None) -> list[str]:
    """The shared tiny config + a tiny random image tower, one epoch, no test after fit (every model override of
    this file is here)."""
    return tiny_overrides(
        {
            "data.work_dir": str(work_dir),
            "model.net.image_model": "test_efficientnet",
            "model.net.image_weights": "none",
            "model.net.image_size": 32,
            "trainer.max_epochs": 1,
            "trainer.enable_model_summary": False,
            "test_after_fit": False,
            **(extra or {}),
        }
    )


def run_clipita(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        CLIPITA_QUIET="1",
    )
    env.pop("CLIPITA_DEBUG", None)
    cmd = [sys.executable, "-m", "clipita.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def fit(config_args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_clipita(
        [
            "fit",
            "--config",
            QUICKSTART,
            *config_args,
            "--trainer.logger.init_args.save_dir",
            str(cwd / "runs"),
        ],
        cwd,
    )


def write_jpeg(path: Path, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    """A 24 px JPEG of one colour plus noise (one colour per class: a model can learn it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(
        np.uint8
    )
    Image.fromarray(pixels).save(path, quality=85)


def leaf_colour(i: int) -> tuple[int, int, int]:
    return ((i * 67) % 256, (i * 151 + 40) % 256, (i * 97 + 90) % 256)


def make_folder_tree(root: Path, per_leaf: int = 12, split_folders: bool = False) -> Path:
    """``Fruit/Apple/Apple_003.jpg``-style tree (file names repeat the class name); returns the schema YAML."""
    rng = np.random.default_rng(0)
    leaves = [("Fruit", "Apple"), ("Fruit", "Pear"), ("Fruit", "Plum"), ("Veg", "Leek"), ("Veg", "Kale")]
    leaves += [("Veg", "Bean"), ("Nut", "Pecan"), ("Nut", "Almond")]
    images = root / "images"
    for i, (top, leaf) in enumerate(leaves):
        for j in range(per_leaf):
            split = "train" if j < per_leaf * 2 // 3 else ("val" if j % 2 else "test")
            folder = images / split / top / leaf if split_folders else images / top / leaf
            write_jpeg(folder / f"{leaf}_{j:03d}.jpg", leaf_colour(i), rng)
    schema = root / "tree.yaml"
    schema.write_text(
        yaml.safe_dump(
            {"layout": "folder_tree", "image_root": "images", "split_folders": split_folders, "name": "tree"}
        )
    )
    return schema


# ids of every kind: dots, slashes, spaces, non-ASCII letters
ODD_IDS = ["B00.123", "SKU/77", "ölkanne 2", "a b/c.d", "Ærø-5", "x..y", "日本 7", "%41"]


def make_odd_table(root: Path, per_leaf: int = 10) -> tuple[Path, list[str]]:
    """A titleless table (image + two category columns only) whose ids are any text and one of whose top-level
    names contains " > " ("A > B"). Returns the schema YAML and every id."""
    rng = np.random.default_rng(1)
    leaves = [("A > B", "x"), ("A > B", "y"), ("A > B", "z"), ("Shoes", "Boots"), ("Shoes", "Clogs")]
    leaves += [("Shoes", "Sandals"), ("Bags", "Totes"), ("Bags", "Purses")]
    rows, ids = [], []
    for i, (top, leaf) in enumerate(leaves):
        for j in range(per_leaf):
            product_id = f"{ODD_IDS[(i * per_leaf + j) % len(ODD_IDS)]} #{i}.{j}"
            file = f"img_{i}_{j}.jpg"
            write_jpeg(root / "images" / file, leaf_colour(i), rng)
            rows.append({"sku": product_id, "file": file, "top": top, "leaf": leaf})
            ids.append(product_id)
    with open(root / "products.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sku", "file", "top", "leaf"])
        writer.writeheader()
        writer.writerows(rows)
    schema = root / "odd.yaml"
    schema.write_text(
        yaml.safe_dump(
            {
                "table": "products.csv",
                "image_root": "images",
                "id_column": "sku",
                "image_column": "file",
                "category_columns": ["top", "leaf"],
                "name": "odd",
            }
        )
    )
    return schema, ids


def leaderboard_yaml(path: Path, rows: list[dict], reference: str, work_dir: Path) -> Path:
    """A one-seed leaderboard over the tiny config (the rows' data come from ``tiny_args``)."""
    spec = {
        "name": path.stem,
        "base_config": QUICKSTART,
        "split_seeds": [0],
        "shared_overrides": tiny_args(work_dir),
        "reference": reference,
        "rows": rows,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def statuses(paths: dict[str, str]) -> dict[str, str]:
    document = json.loads(Path(paths["json"]).read_text())
    return {row["name"]: row["status"] for row in document["rows"]}


def read_manifest(shard_dir: Path) -> Manifest:
    return Manifest.read(shard_dir / "manifest.json")


# -------------------------------------------------------------------------------------------- fast checks
def test_missing_modality_message_names_model_modality_catalogue_and_the_configs_that_fit():
    clip_ita = SimpleNamespace(modalities=["image", "title", "attributes"], zero_shot_weight=0.0)
    assert (
        missing_modality_message(clip_ita, ["image", "attributes"], "shop")
        == "CLIP-ITA needs titles; catalogue 'shop' has none: use experiments/clip_i.yaml or clip_ia.yaml"
    )
    assert missing_modality_message(clip_ita, ["image", "title", "attributes"], "shop") is None
    # no text at all (a folder tree): only CLIP-I fits
    message = missing_modality_message(clip_ita, ["image"], "tree")
    assert (
        message
        == "CLIP-ITA needs titles and attributes; catalogue 'tree' has none: use experiments/clip_i.yaml"
    )
    clip_ia = SimpleNamespace(modalities=["image", "attributes"])
    assert missing_modality_message(clip_ia, ["image"], "tree").startswith("CLIP-IA needs attributes;")
    # an image-only model that mixes in the title embedding reads titles too
    mixing = SimpleNamespace(modalities=["image"], zero_shot_weight=0.5)
    assert "needs titles" in missing_modality_message(mixing, ["image"], "tree")
    assert missing_modality_message(SimpleNamespace(modalities=["image"]), ["image"], "tree") is None


def test_check_modalities_reads_the_manifest_and_raises_a_value_error(tmp_path):
    from datamodules.catalogue_datamodule import CatalogueDataModule

    dm = CatalogueDataModule(
        catalogue=str(make_folder_tree(tmp_path / "cat", per_leaf=4)), work_dir=str(tmp_path / "w")
    )
    clip_ita = SimpleNamespace(modalities=["image", "title", "attributes"])
    with pytest.raises(MissingModalityError, match="catalogue 'tree' has none") as raised:
        check_modalities(clip_ita, dm)
    assert isinstance(raised.value, ValueError)  # `clipita` prints it as one line and exits 1
    assert dm.modalities_present == ["image"] and not (tmp_path / "w" / "features").exists()
    check_modalities(SimpleNamespace(modalities=["image"]), dm)  # CLIP-I is fine


def test_sample_titles_is_part_of_the_samples_cache_key(tmp_path):
    from datamodules.catalogue_datamodule import CatalogueDataModule

    def dm(titles: str) -> CatalogueDataModule:
        return CatalogueDataModule(work_dir=str(tmp_path), sample_products=40, sample_titles=titles)

    signal, none = dm("signal"), dm("none")
    assert signal.catalogue_path() != none.catalogue_path()
    assert signal._shard_request(signal.catalogue_path()) != none._shard_request(none.catalogue_path())
    none.read_catalogue()
    assert none.modality_counts["title"] == {"present": 0, "missing": 40}
    assert "title" not in none.modalities_present
    # another sample size is another catalogue too (the shards are not reused stale)
    bigger = CatalogueDataModule(work_dir=str(tmp_path), sample_products=48, sample_titles="none")
    assert not bigger.shards_ready()


def test_a_level_named_with_the_separator_resolves_to_that_one_name():
    tree = [("A > B",), ("A > B", "x"), ("A",), ("A", "B"), ("Shoes",), ("Shoes", "Boots")]
    assert resolve_category("A > B", tree) == ("A", "B")  # a path of the tree level by level wins
    tree = [("A > B",), ("A > B", "x"), ("Shoes",), ("Shoes", "Boots")]
    assert resolve_category("A > B", tree) == ("A > B",)
    assert resolve_category("a > b > X", tree) == ("A > B", "x")
    assert resolve_category("Boots", tree) == ("Shoes", "Boots")
    assert resolve_category("B", tree) is None


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def titleless_work(tmp_path_factory) -> Path:
    """One work dir for the titleless sample (``data.sample_titles none``): fits and the leaderboard share its
    shards and feature cache."""
    return tmp_path_factory.mktemp("titleless")


@pytest.mark.slow
def test_clip_ita_on_a_titleless_table_fails_at_start_with_one_line(tmp_path):
    result = fit(tiny_args(tmp_path / "work", {"data.sample_titles": "none"}), tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        "clipita: error: CLIP-ITA needs titles; catalogue 'sample' has none: "
        "use experiments/clip_i.yaml or clip_ia.yaml" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert (tmp_path / "work" / "shards" / "seed0" / "manifest.json").is_file()
    assert not (tmp_path / "work" / "features").exists()  # it stopped before any image was encoded


@pytest.mark.slow
@pytest.mark.parametrize("modalities", [["image"], ["image", "attributes"]], ids=["CLIP-I", "CLIP-IA"])
def test_a_titleless_table_trains_clip_i_and_clip_ia(titleless_work, tmp_path, modalities):
    args = tiny_args(titleless_work, {"data.sample_titles": "none", "model.net.modalities": modalities})
    result = fit(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "runs").rglob("last.ckpt"))
    manifest = read_manifest(titleless_work / "shards" / "seed0")
    assert manifest.sharded == manifest.input_rows == 160  # every titleless product is sharded
    assert manifest.modalities["title"]["present"] == 0


@pytest.mark.slow
def test_leaderboard_on_a_titleless_table_marks_the_title_rows_not_run(titleless_work, tmp_path):
    rows = [
        {"name": "random", "baseline": "random"},
        {"name": "BM25", "baseline": "bm25"},
        {"name": "title zero-shot", "baseline": "title_zero_shot"},
        {"name": "CLIP-I", "fit": QUICKSTART, "overrides": ["--model.net.modalities", "[image]"]},
        {"name": "CLIP-ITA", "fit": QUICKSTART},
    ]
    spec = leaderboard_yaml(tmp_path / "titleless.yaml", rows, "CLIP-I", titleless_work)
    paths = leaderboard(
        str(spec),
        output_dir=str(tmp_path / "out"),
        overrides=["--data.sample_titles", "none"],
        runs_dir=str(tmp_path / "runs"),
    )
    status = statuses(paths)
    assert status["random"] == status["CLIP-I"] == "ok"
    assert status["BM25"].startswith(NO_TITLES) and status["title zero-shot"].startswith(NO_TITLES)
    assert status["CLIP-ITA"].startswith("not run: CLIP-ITA needs titles; catalogue 'sample' has none")
    assert "not run: the catalogue has no titles" in Path(paths["markdown"]).read_text()


@pytest.mark.slow
def test_folder_tree_products_have_no_title_and_its_leaderboard_text_rows_are_not_run(tmp_path):
    schema = make_folder_tree(tmp_path / "cat")
    shards = tmp_path / "shards"
    result = run_clipita(["shard", str(schema), str(shards)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(shards)
    assert manifest.sharded == 8 * 12
    assert manifest.modalities["title"] == {"present": 0, "missing": 96}  # file names never become titles
    assert manifest.modalities_present == ["image"]

    rows = [
        {"name": "random", "baseline": "random"},
        {"name": "BM25", "baseline": "bm25"},
        {"name": "title zero-shot", "baseline": "title_zero_shot"},
        {"name": "CLIP-ITA", "fit": QUICKSTART},
    ]
    spec = leaderboard_yaml(tmp_path / "tree_lb.yaml", rows, "random", tmp_path / "work")
    paths = leaderboard(
        str(spec),
        output_dir=str(tmp_path / "out"),
        overrides=["--data.catalogue", str(schema)],
        runs_dir=str(tmp_path / "runs"),
    )
    status = statuses(paths)
    assert status["random"] == "ok"
    assert status["BM25"].startswith(NO_TITLES) and status["title zero-shot"].startswith(NO_TITLES)
    assert status["CLIP-ITA"].startswith("not run: CLIP-ITA needs titles and attributes; catalogue 'tree'")


@pytest.mark.slow
def test_folder_tree_with_split_folders_trains_on_its_own_split(tmp_path):
    schema = make_folder_tree(tmp_path / "cat", split_folders=True)
    args = tiny_args(tmp_path / "work", {"data.catalogue": str(schema), "model.net.modalities": ["image"]})
    result = fit(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "work" / "shards" / "seed0")
    assert manifest.split_source == "folders"
    assert {s: manifest.count(s) for s in ("train", "val", "test")} == {
        "train": 64,
        "val": 16,
        "test": 16,
    }


@pytest.mark.slow
def test_odd_ids_and_a_level_named_a_gt_b_train_index_and_search(tmp_path):
    schema, ids = make_odd_table(tmp_path / "cat")
    work = tmp_path / "work"
    result = fit(
        tiny_args(work, {"data.catalogue": str(schema), "model.net.modalities": ["image"]}), tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    index_dir = tmp_path / "index"
    result = run_clipita(
        [
            "index",
            "--ckpt",
            str(ckpt),
            "--output_dir",
            str(index_dir),
            "--split",
            "all",
            "--progress",
            "false",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_clipita(
        ["search", "--index", str(index_dir), "--json", "-k", str(len(ids)), "A > B", "Shoes > Boots"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a_b, boots = json.loads(result.stdout)["queries"]
    # "A > B" is the one-name top-level category, encoded as its own name (not as "B")
    assert a_b["category"] == "A > B" and a_b["category_path"] == ["A > B"] and a_b["query_text"] == "A > B"
    assert boots["category_path"] == ["Shoes", "Boots"] and boots["query_text"] == "Boots"
    # every original id comes back, as given
    assert sorted(hit["id"] for hit in a_b["results"]) == sorted(ids)
    paths = {hit["id"]: hit["category_path"] for hit in a_b["results"]}
    assert paths["B00.123 #0.0"] == ["A > B", "x"] and paths["ölkanne 2 #0.2"] == ["A > B", "x"]
    assert {tuple(p) for p in paths.values()} >= {("A > B", "y"), ("Shoes", "Boots"), ("Bags", "Purses")}


@pytest.mark.slow
def test_no_surviving_row_makes_shard_exit_non_zero_naming_the_reasons(tmp_path):
    schema, _ = make_odd_table(tmp_path / "cat", per_leaf=2)
    for image in (tmp_path / "cat" / "images").iterdir():
        image.unlink()
    result = run_clipita(["shard", str(schema), str(tmp_path / "shards")], tmp_path)
    assert result.returncode != 0
    assert "no product of catalogue 'odd' survived the checks" in result.stderr
    assert "missing image" in result.stderr.replace("_", " ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "shards" / "manifest.json").exists()
