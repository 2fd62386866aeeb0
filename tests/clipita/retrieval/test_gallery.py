"""``clipita gallery`` (the static HTML page, opened in headless Chromium) and the training-curve PNG."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from PIL import Image
from tiny_retrieval import build_tiny_index

from clipita.cli import main as clipita
from clipita.retrieval.gallery import default_categories, make_thumbnail, read_record_jpeg, render_html
from clipita.retrieval.index_shards import IndexShards, merge_products
from clipita.retrieval.search import is_relevant, resolve_category
from clipita.retrieval.search_index import SearchIndex
from clipita.retrieval.shard_metadata import PRODUCT_COLUMNS
from clipita_core.index_info import IndexShard
from lightning_modules.curves import plot_training_curves, read_curves

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def run_chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no network use of its own (no background fetches, no component updates)."""
    binary = find_chromium()
    assert binary is not None
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        *extra,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (90, 120)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ fast tests
def test_thumbnail_read_by_byte_range_or_by_scanning(tmp_path):
    shard = tmp_path / "test-000000.tar"
    with wds.TarWriter(str(shard), encoder=False) as sink:
        for i, color in enumerate([(255, 0, 0), (0, 0, 255)]):
            sink.write({"__key__": f"p{i}", "jpg": jpeg_bytes(color), "json": b"{}"})
    scanned = read_record_jpeg(shard, "p1")  # no byte range: scan the tar
    assert read_record_jpeg(shard, "p1", offset=3, size=10) == scanned  # stale range: falls back to a scan
    with pytest.raises(KeyError, match="p9"):
        read_record_jpeg(shard, "p9")
    make_thumbnail(scanned, tmp_path / "t.jpg", size=40)
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 40 and thumb.size == (30, 40)
        assert thumb.getpixel((15, 20))[2] > 200  # still blue


def test_render_html_marks_relevance_and_escapes():
    hit = {
        "rank": 1,
        "id": "p1",
        "title": "<b>Red</b> shoe",
        "category": "A > B",
        "score": 0.5,
        "image": "images/p1.jpg",
    }
    page = {
        "title": "t",
        "k": 2,
        "models": [{"label": "CLIP-I", "mean_precision": 0.5, "judged_queries": 1, "num_products": 3}],
        "rows": [
            {
                "query": "A",
                "category": "A",
                "unseen": True,
                "num_relevant": 1,
                "results": [
                    {
                        "precision": 0.5,
                        "num_relevant": 1,
                        "hits": [dict(hit, relevant=True), dict(hit, rank=2, id="p2", relevant=False)],
                    }
                ],
            }
        ],
    }
    text = render_html(page)
    assert text.count('class="hit rel"') == 1 and text.count('class="hit irr"') == 1
    assert "&lt;b&gt;Red&lt;/b&gt;" in text and "<b>Red</b>" not in text
    assert "unseen in training" in text and 'id="image-check"' in text and "(at most 0.5)" in text


def test_training_curves_png(tmp_path):
    rows = ["epoch,step,train/loss,val/map@10"]
    for epoch in range(3):
        rows += [f"{epoch},{epoch * 4 + s},{3.0 - epoch - s * 0.1}," for s in range(4)]
        rows.append(f"{epoch},{epoch * 4 + 3},,{0.5 + 0.1 * epoch}")
    csv = tmp_path / "run" / "version_0" / "metrics.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("\n".join(rows) + "\n")
    curves = read_curves(csv)
    assert curves["loss_epochs"]["value"].round(2).tolist() == [2.85, 1.85, 0.85]
    assert curves["val_map"]["value"].round(2).tolist() == [0.5, 0.6, 0.7]
    png = plot_training_curves(csv, tmp_path / "out" / "curves.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 600
    # a run without validation still plots, saying what is missing
    csv.write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.9\n")
    assert plot_training_curves(csv, tmp_path / "no_val.png").is_file()


# ------------------------------------------------------------- product metadata read without the whole table
LEAF_PATHS = [("A", "B"), ("A", "C"), ("D", "E"), ("D", "F")]


def product_frame(ids: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    paths = [LEAF_PATHS[i] for i in rng.integers(len(LEAF_PATHS), size=len(ids))]
    rows = [
        {"id": i, "title": f"t {i}", "category": " > ".join(c), "category_path": json.dumps(list(c)), "split": "test",
         "shard": "s.tar", "key": i, "jpg_offset": n * 100, "jpg_size": 10 + n}
        for n, (i, c) in enumerate(zip(ids, paths, strict=True))
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=PRODUCT_COLUMNS)


def sharded_index(folder: Path, counts: list[int], d: int = 4) -> SearchIndex:
    """An index of per-shard tables (``clipita index`` >= 2) with mixed categories, embeddings all zero."""
    shards = IndexShards(folder, [IndexShard("test", f"test-{n:06d}.tar", c) for n, c in enumerate(counts)])
    shards.prepare({"checkpoint_sha256": "x"})
    for n, shard in enumerate(shards.shards):
        ids = [f"p{n}-{r}" for r in range(shard.count)]
        emb = np.zeros((shard.count, d), dtype=np.float32)
        arrays = {"embedding": emb, "embedding16": emb.astype(np.float16)}
        shards.write_shard(shard.name, ids, arrays, product_frame(ids, seed=n))
    merge_products(shards, folder / "products.parquet")
    info = {
        "version": 2, "checkpoint": "none", "tree": [["A"], ["D"]] + [list(p) for p in LEAF_PATHS],
        "faiss": None, "files": {"products": "products.parquet"},
        "shards": [{"split": s.split, "name": s.name, "count": s.count} for s in shards.shards],
    }  # fmt: skip
    (folder / "index.json").write_text(json.dumps(info))
    return SearchIndex.load(folder)


class ReadLog:
    """Forbids reading a parquet table whole (pandas, ``pq.read_table``, ``ParquetFile.read``,
    ``SearchIndex.products``) and records the rows ``ParquetFile.iter_batches`` decodes, per column selection."""

    def __init__(self, monkeypatch) -> None:
        self.rows: Counter[tuple[str, ...] | None] = Counter()
        iter_batches = pq.ParquetFile.iter_batches

        def whole(*args, **kwargs):
            raise AssertionError("a whole parquet table was read")

        def logged(parquet, *args, columns=None, **kwargs):
            for batch in iter_batches(parquet, *args, columns=columns, **kwargs):
                self.rows[tuple(columns) if columns else None] += batch.num_rows
                yield batch

        monkeypatch.setattr(pd, "read_parquet", whole)
        monkeypatch.setattr(pq, "read_table", whole)
        monkeypatch.setattr(pq.ParquetFile, "read", whole)
        monkeypatch.setattr(pq.ParquetFile, "iter_batches", logged)
        monkeypatch.setattr(SearchIndex, "products", property(whole))


def test_hit_rows_and_category_counts_come_without_the_whole_table(tmp_path, monkeypatch):
    index = sharded_index(tmp_path / "sharded", [40, 0, 33, 50, 25])  # rows 0-39, 40-72, 73-122, 123-147
    rows = [41, 44, 80, 0]
    whole = pd.read_parquet(index.folder / "products.parquet")
    expected = {r: whole.iloc[r].to_dict() for r in rows}
    categories = Counter(tuple(json.loads(p)) for p in whole["category_path"])
    log = ReadLog(monkeypatch)
    assert index.product_rows(rows) == expected
    assert index.hits(torch.zeros(1, len(rows)), torch.tensor([rows]))[0][1]["id"] == expected[rows[1]]["id"]
    # the tables of shards 0, 2 and 3 were decoded (twice: rows, then hits)
    assert log.rows == {None: 2 * (40 + 33 + 50)}
    with pytest.raises(IndexError, match="outside"):
        index.product_rows([148])
    log.rows.clear()
    assert index.category_counts() == categories
    assert log.rows == {("category_path", "category"): 148}  # only the category columns
    assert default_categories(index, count=4) == [
        " > ".join(p) for p in sorted(LEAF_PATHS, key=lambda p: -categories[p])
    ]


# ------------------------------------------------------------------------------------ end to end (tiny model)
@pytest.fixture(scope="module")
def tiny_gallery(tmp_path_factory) -> Path:
    index = build_tiny_index(tmp_path_factory.getbasetemp() / "tiny_clip_ita")
    out = tmp_path_factory.mktemp("gallery")
    clipita(
        [
            "gallery",
            "--indexes",
            json.dumps([str(index), str(index)]),
            "--labels",
            '["model A", "model B"]',
            "--categories",
            json.dumps(["Footwear", "Apparel > Topwear", "Handbags", "a velvet armchair"]),
            "--k",
            "6",
            "--output_dir",
            str(out),
        ]
    )
    return out


@pytest.mark.slow
def test_gallery_files_and_relevance_marks(tiny_gallery):
    html = (tiny_gallery / "index.html").read_text()
    page = json.loads((tiny_gallery / "gallery.json").read_text())
    assert [m["label"] for m in page["models"]] == ["model A", "model B"]
    assert [r["query"] for r in page["rows"]] == [
        "Footwear",
        "Apparel > Topwear",
        "Handbags",
        "a velvet armchair",
    ]
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 4 * 2 * 6
    for src in sources:
        assert src.startswith("images/") and (tiny_gallery / src).is_file()  # relative links to real files
    tree = [tuple(c.split(" > ")) for c in ("Footwear", "Apparel > Topwear", "Accessories > Bags > Handbags")]
    for row in page["rows"]:
        path = resolve_category(row["query"], tree)
        assert row["category"] == (" > ".join(path) if path else None)
        for result in row["results"]:
            for hit in result["hits"]:
                expected = is_relevant(hit["category_path"], path) if path else None
                assert hit["relevant"] == expected
    assert html.count('class="hit unk"') == 2 * 6  # the free-text query is not judged
    assert page["rows"][2]["unseen"]  # Handbags is held out of training in the sample split


@pytest.mark.slow
def test_gallery_opens_in_headless_chromium(tiny_gallery, tmp_path):
    if find_chromium() is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium); the page was not opened")
    url = (tiny_gallery / "index.html").resolve().as_uri()
    dom = run_chromium(url, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    check = re.search(r'<p id="image-check"([^>]*)>', dom.stdout)
    assert check, dom.stdout[-2000:]
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', check.group(1)))
    assert attrs["data-total"] == attrs["data-ok"] == str(4 * 2 * 6), attrs
    assert json.loads(attrs["data-broken"].replace("&quot;", '"')) == []
    assert dom.stdout.count('data-loaded="1"') == 4 * 2 * 6 and 'data-loaded="0"' not in dom.stdout

    png = tiny_gallery / "screenshot.png"
    shot = run_chromium(url, tmp_path / "profile-shot", f"--screenshot={png}")
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    with Image.open(png) as image:
        assert image.size == (1400, 1000)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 50  # not a blank page


@pytest.mark.slow
def test_gallery_reads_only_the_hit_rows_and_category_columns(tiny_gallery, tmp_path, monkeypatch):
    """The same page with every whole-table read forbidden; the relevant counts match the whole table's."""
    page = json.loads((tiny_gallery / "gallery.json").read_text())
    index = Path(page["models"][0]["index"])
    whole = pd.read_parquet(index / "products.parquet")
    paths = [tuple(json.loads(p)) for p in whole["category_path"]]
    log = ReadLog(monkeypatch)
    for name, categories in (("named", [r["query"] for r in page["rows"]]), ("default", None)):
        args = ["gallery", "--indexes", json.dumps([str(index)] * 2), "--labels", '["model A", "model B"]']
        args += ["--k", "6", "--output_dir", str(tmp_path / name)]
        clipita(args + (["--categories", json.dumps(categories)] if categories else []))
    named = json.loads((tmp_path / "named" / "gallery.json").read_text())
    assert (
        named == page
        and (tmp_path / "named" / "index.html").read_text() == (tiny_gallery / "index.html").read_text()
    )
    default = json.loads((tmp_path / "default" / "gallery.json").read_text())
    assert len(default["rows"]) == 12
    for row in named["rows"] + default["rows"]:
        if row["category"] is not None:
            path = tuple(row["category"].split(" > "))
            assert row["num_relevant"] == sum(is_relevant(p, path) for p in paths) > 0
    assert set(log.rows) == {None, ("category_path", "category")}
