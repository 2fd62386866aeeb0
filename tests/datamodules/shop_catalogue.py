"""A small shop catalogue for the sharding tests: five leaves of a two-level tree, good rows and a few bad ones, and
the records read back from its shards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import webdataset as wds
from catalogue_files import csv_line
from PIL import Image

from clipita_core.manifest import Manifest
from datamodules.records import id_from_key
from datamodules.sharding import shard_catalogue

SPLITS = ("train", "val", "test")


LEAVES = [
    ("Apparel", "Shirts"),
    ("Apparel", "Jeans"),
    ("Footwear", "Shoes"),
    ("Footwear", "Boots"),
    ("Bags", "Totes"),
]


def jpeg(seed: int, size: tuple[int, int] = (10, 8)) -> bytes:
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    image.putpixel((seed % size[0], 0), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def build_catalogue(root: Path, per_leaf: int = 8, bad_rows: bool = True) -> tuple[Path, dict[str, dict]]:
    """A small CSV catalogue + schema YAML; returns (yaml path, id -> expected fields incl. image bytes)."""
    (root / "data" / "images").mkdir(parents=True)
    rows: list[list[str]] = []
    expected: dict[str, dict] = {}
    n = 0
    for top, leaf in LEAVES:
        for k in range(per_leaf):
            n += 1
            pid = f"sku{n:03d}"
            colour = ["Red", "Blue", ""][k % 3]
            rows.append([pid, f"{leaf} number {k} ünïcode", top, leaf, colour])
            data = jpeg(n)
            (root / "data" / "images" / f"{pid}.jpg").write_bytes(data)
            expected[pid] = {
                "title": f"{leaf} number {k} ünïcode",
                "category": [top, leaf],
                "attributes": {"colour": colour} if colour else {},
                "jpg": data,
            }
    if bad_rows:
        rows.append(["missing1", "No image", "Apparel", "Shirts", "Red"])
        rows.append(["sku001", "Duplicate", "Apparel", "Shirts", "Red"])
        rows.append(["broken", "Corrupt image", "Apparel", "Shirts", "Red"])
        (root / "data" / "images" / "broken.jpg").write_bytes(jpeg(3)[:40])
        # ids with a dot and no title are ordinary products now
        for pid, title, seed in (("B00.123", "Dotted id", 1), ("notitle", "", 2)):
            rows.append([pid, title, "Apparel", "Shirts", "Red"])
            (root / "data" / "images" / f"{pid}.jpg").write_bytes(jpeg(seed))
            expected[pid] = {
                "title": title,
                "category": ["Apparel", "Shirts"],
                "attributes": {"colour": "Red"},
                "jpg": jpeg(seed),
            }
    text = csv_line(["id", "title", "top", "leaf", "colour"]) + "".join(csv_line(r) for r in rows)
    (root / "data" / "products.csv").write_text(text, encoding="utf-8")
    yaml_path = root / "shop.yaml"
    yaml_path.write_text(
        "name: shop\ntable: data/products.csv\nimage_root: data/images\ntitle_column: title\n"
        "category_columns: [top, leaf]\nattribute_columns: [colour]\n",
        encoding="utf-8",
    )
    return yaml_path, expected


def read_back(manifest: Manifest, shard_dir: Path) -> dict[str, dict]:
    """Every record in the shards, read with webdataset: id -> {json, jpg, split}."""
    out: dict[str, dict] = {}
    for split in SPLITS:
        urls = manifest.shard_urls(shard_dir, split)
        if not urls:
            continue
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            key = id_from_key(sample["__key__"])
            assert key not in out, f"{key} written twice"
            out[key] = {"json": json.loads(sample["json"]), "jpg": sample["jpg"], "split": split}
    return out


def shard_shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, dict[str, dict]]:
    """The shop sharded once (shard size 7, seed 3): (manifest, shard folder, id -> expected fields)."""
    root = tmp_path_factory.mktemp("shop")
    yaml_path, expected = build_catalogue(root)
    out = root / "shards"
    manifest = shard_catalogue(str(yaml_path), str(out), shard_size=7, seed=3, progress=False)
    return manifest, out, expected
