"""The adaptive recipe runs on every catalogue shape (issue 20): a table with titles and no attributes, one with
attributes and no titles, one with neither, and a folder tree without and with a metadata table. Each is fitted
with ``experiments/clip_ita_adaptive.yaml`` (tiny towers, one epoch), indexed and searched through the ``clipita``
entry point. A modality no product has is left out of the towers with one logged line, and the signals that read
it (the title match, BM25) are off; the paper's recipes keep refusing (tests/clipita/test_catalogue_shapes_e2e.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from catalogue_shapes import LEAVES, adaptive_overrides, folder_tree, table
from conftest import tiny_overrides

from clipita import modalities
from clipita.cli import main
from clipita.modalities import adapted_config
from lightning_modules.checkpointing import read_record
from lightning_modules.scorer_choice import CHOICE_KEY

REPO = Path(__file__).resolve().parents[2]
ADAPTIVE = str(REPO / "experiments" / "clip_ita_adaptive.yaml")
LEFT_OUT = "the model leaves them out"
ALL = ["image", "title", "attributes"]
ADAPTIVE_NET = {
    "modalities": ALL,
    "route_novel_categories": True,
    "lexical_signal": True,
    "zero_shot_weight": 0.0,
}


# -------------------------------------------------------------------------------------------- fast checks
@pytest.mark.parametrize(
    ("present", "modalities", "route", "lexical"),
    [
        (["image", "title"], ["image", "title"], True, True),
        (["image", "attributes"], ["image", "attributes"], False, True),
        (["image"], ["image"], False, False),
    ],
    ids=["no-attributes", "no-titles", "neither"],
)
def test_adapted_config_leaves_out_what_no_product_has_and_the_signals_reading_it(
    present, modalities, route, lexical
):
    config, left_out = adapted_config(dict(ADAPTIVE_NET), present)
    assert config["modalities"] == modalities and left_out == [m for m in ALL[1:] if m not in present]
    assert config["route_novel_categories"] is route and config["lexical_signal"] is lexical
    assert adapted_config(dict(ADAPTIVE_NET), ALL) is None  # nothing to leave out: the network as configured
    assert (
        adapted_config({"modalities": ["title"]}, ["image"]) is None
    )  # nothing left to fuse: refused as before


# ------------------------------------------------------------------------------------------ end to end
SHAPES = {  # name -> (catalogue maker, modalities the towers keep)
    "table-titles-no-attributes": (
        lambda root: table(root, titles=True, attributes=False),
        ["image", "title"],
    ),
    "table-attributes-no-titles": (
        lambda root: table(root, titles=False, attributes=True),
        ["image", "attributes"],
    ),
    "table-neither": (lambda root: table(root, titles=False, attributes=False), ["image"]),
    "folder-tree": (lambda root: folder_tree(root), ["image"]),
    "folder-tree-with-metadata": (lambda root: folder_tree(root, metadata=True), ALL),
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_adaptive_recipe_fits_indexes_and_searches_every_shape(shape, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make, kept = SHAPES[shape]
    schema = make(tmp_path / "cat")
    overrides = adaptive_overrides(schema, tmp_path)
    logged: list[str] = []
    monkeypatch.setattr(modalities, "rank_zero_info", logged.append)  # what `clipita fit` logs on rank 0
    main(["fit", "--config", ADAPTIVE, *tiny_overrides(overrides)])
    left_out = [line for line in logged if LEFT_OUT in line]
    if kept == ALL:
        assert not left_out
    else:  # one line, naming the catalogue and what it lacks
        what = " or ".join(
            {"title": "titles", "attributes": "attributes"}[m] for m in ALL[1:] if m not in kept
        )
        assert left_out == [f"catalogue {schema.stem!r} has no {what}: {LEFT_OUT}"], logged

    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    record = read_record(torch.load(ckpt, map_location="cpu", weights_only=True), str(ckpt))
    assert record["net_config"]["modalities"] == kept
    retrieval = record["retrieval"]
    assert ("seen_title_weight" in retrieval) == ("title" in kept)  # no titles: no title match to weigh
    assert ("seen_lexical_weight" in retrieval) == (kept != ["image"])  # no text: no BM25 term
    assert retrieval[CHOICE_KEY]["products"] > 0

    main(["index", "--ckpt", str(ckpt), "--output_dir", str(tmp_path / "index"), "--split", "all"])
    capsys.readouterr()
    queries = ["Fruit > Apple", "Nut", LEAVES[4][1]]
    main(["search", "--index", str(tmp_path / "index"), "--json", "-k", "5", *queries])
    found = json.loads(capsys.readouterr().out)["queries"]
    assert [q["category"] for q in found] == ["Fruit > Apple", "Nut", "Veg > Kale"]
    for query in found:
        assert len(query["results"]) == 5 and len({hit["id"] for hit in query["results"]}) == 5
        scores = [hit["score"] for hit in query["results"]]
        assert scores == sorted(scores, reverse=True)
