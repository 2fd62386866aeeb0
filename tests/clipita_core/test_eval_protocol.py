"""The evaluation protocol: built from a sharded sample's manifest, its queries, settings and seen / novel / unseen
categories are what the shards themselves hold (checked record by record, not from the manifest), and it checks its
own parts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from clipita_core.protocol import EvalProtocol
from clipita_core.tree import CategoryTree
from datamodules.manifest import load_manifest
from datamodules.sample_catalogue import SAMPLE_ATTRIBUTES, generate_sample_catalogue
from datamodules.shard_io import iter_shard_records
from datamodules.sharding import shard_catalogue


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """The built-in sample (120 products) sharded with unseen and pseudo-novel leaves."""
    folder = tmp_path_factory.mktemp("protocol")
    catalogue = generate_sample_catalogue(str(folder / "catalogue"), num_products=120, seed=0, image_size=32)
    shard_catalogue(
        str(catalogue),
        str(folder / "shards"),
        shard_size=40,
        seed=2,
        progress=False,
        pseudo_novel_fraction=0.25,
    )
    return folder / "shards"


def leaves_by_split(shard_dir: Path) -> dict[str, set[tuple[str, ...]]]:
    """The leaf paths of each split's products, read from the shard records."""
    out: dict[str, set[tuple[str, ...]]] = {"train": set(), "val": set(), "test": set()}
    for url in sorted(shard_dir.glob("*.tar")):
        for record, _ in iter_shard_records(str(url)):
            out[record.split].add(tuple(record.category))
    return out


def test_the_protocol_of_a_sharded_sample_is_what_its_shards_hold(sharded):
    protocol = EvalProtocol.from_manifest(load_manifest(str(sharded)), "leaf")
    by_split = leaves_by_split(sharded)
    products = set().union(*by_split.values())
    assert protocol.tree == CategoryTree.from_paths(products)
    paths = protocol.query_paths
    assert protocol.query_texts == [p[-1] for p in paths]
    trained = {p[:d] for p in by_split["train"] for d in range(1, len(p) + 1)}
    assert set(protocol.seen_paths) == trained and list(protocol.seen_ids) == sorted(protocol.seen_ids)
    unseen = products - by_split["train"] - by_split["val"]  # test-only leaves
    novel = (by_split["val"] - by_split["train"]) - unseen  # validation-only: the pseudo-novel leaves
    assert unseen and novel  # the split held out both kinds, so the checks below can fail
    assert {paths[i] for i in protocol.unseen_ids} == unseen
    assert {paths[i] for i in protocol.novel_ids} == novel
    assert protocol.attribute_names == tuple(SAMPLE_ATTRIBUTES)

    leaf = np.array([not any(q[: len(p)] == p and len(q) > len(p) for q in paths) for p in paths])
    depth = np.array([len(p) for p in paths])
    in_unseen = np.array([p in unseen for p in paths])
    settings = protocol.settings
    assert list(settings) == ["all", "general", "specific", "level-2", "specific_seen", "specific_unseen"]
    expected = {
        "all": np.ones(len(paths), dtype=bool),
        "general": depth == 1,
        "specific": leaf,
        "level-2": depth == 2,
        "specific_seen": leaf & ~in_unseen,
        "specific_unseen": leaf & in_unseen,
    }
    for name, mask in expected.items():
        assert settings[name].dtype == bool and np.array_equal(settings[name], mask), name

    validation = protocol.validation_settings
    assert list(validation) == ["all", "general", "specific", "level-2", "specific_seen", "specific_novel"]
    in_trained = np.array([p in trained for p in paths])
    assert np.array_equal(validation["specific_seen"], leaf & in_trained)
    assert np.array_equal(validation["specific_novel"], leaf & ~in_trained)  # pseudo-novel and unseen leaves
    assert {paths[i] for i in np.flatnonzero(validation["specific_novel"])} == novel | unseen


def test_the_text_style_names_the_queries_and_is_part_of_the_protocol(sharded):
    manifest = load_manifest(str(sharded))
    by_path = EvalProtocol.from_manifest(manifest, "path")
    assert by_path.query_texts == [" > ".join(p) for p in by_path.query_paths]
    assert by_path == EvalProtocol.from_manifest(manifest, "path")
    assert by_path != EvalProtocol.from_manifest(manifest, "leaf")


def test_without_held_out_leaves_there_is_no_seen_unseen_split_and_nothing_novel():
    tree = CategoryTree.from_paths([("A", "x"), ("A", "y"), ("B", "z")])
    every = [i for i in range(len(tree))]
    protocol = EvalProtocol(tree, seen_ids=every)
    assert list(protocol.settings) == ["all", "general", "specific"]  # depth 2: no inner level
    validation = protocol.validation_settings
    assert np.array_equal(validation["specific_seen"], protocol.settings["specific"])
    assert not validation["specific_novel"].any()
    untrained = EvalProtocol(tree)  # no trained set: nothing is called novel
    assert not untrained.validation_settings["specific_novel"].any()


def test_the_protocol_checks_its_parts_and_is_frozen():
    tree = CategoryTree.from_paths([("A", "x")])
    with pytest.raises(ValueError, match="category text style 'name'"):
        EvalProtocol(tree, "name")
    with pytest.raises(ValueError, match=r"unseen category ids \[5\] are not rows of the 2-category table"):
        EvalProtocol(tree, unseen_ids=[5])
    protocol = EvalProtocol(tree, seen_ids=np.array([0, 1]), attribute_names=["colour"])
    assert protocol.seen_ids == (0, 1) and protocol.attribute_names == ("colour",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol.seen_ids = ()
