"""``clipita gallery``: a static HTML page of the top-k product images per category, models side by side.

    clipita gallery --indexes '[work/fashion/index/clip_i, work/fashion/index/clip_ita]' --labels '[CLIP-I, CLIP-ITA]' \\
        --categories '["Footwear > Shoes > Sports Shoes", "Watches", "summer dresses"]' --output_dir work/fashion/gallery

One row per category query, one column per index (each index is a model's embedding of the catalogue, built by
``clipita index``). Every hit is a thumbnail cut from the WebDataset shards (one seek per image: the index's
``products.parquet`` records each JPEG's byte range) into ``<output_dir>/images/`` as a small JPEG, referenced by a
relative path, so the folder can be zipped or served as is. Where the query names a category of the catalogue tree
(a path, or a node name unique in the tree), hits are framed green when relevant and red when not, with
hierarchical relevance: the query is the product's category or one of its ancestors; a free-text query outside the
tree is framed grey. Each row shows P@k per model and whether the category was held out of training (*unseen*).

The page records after loading whether every thumbnail decoded (``data-loaded`` on each ``<img>``, and a summary
in ``#image-check``), so a headless browser's ``--dump-dom`` shows broken images. ``gallery.json`` beside the HTML
holds the same results for machines.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from clipita_core.paths import format_path
from clipita_core.tree import CategoryTree
from datamodules.shard_io import read_members, read_span

from .search import CategoryEncoder, is_relevant, rank_queries
from .search_index import SearchIndex

HTML_NAME = "index.html"
JSON_NAME = "gallery.json"
IMAGES_DIR = "images"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


# ------------------------------------------------------------------------------------------------ thumbnails
def read_record_jpeg(shard: str | Path, key: str, offset: int = -1, size: int = -1) -> bytes:
    """The JPEG bytes of record ``key`` in an uncompressed tar shard: one seek when the byte range is known.

    Falls back to scanning the tar for ``<key>.jpg`` when ``offset``/``size`` are unknown (-1) or stale (the bytes
    there are not a JPEG).
    """
    shard = Path(shard)
    if offset >= 0 and size > 0:
        data = read_span(shard, offset, size)
        if data[:2] == b"\xff\xd8":
            return data
    found = read_members(shard, [f"{key}.jpg"])
    if found:
        return found[f"{key}.jpg"]
    raise KeyError(f"no image for record {key!r} in shard {shard}")


def make_thumbnail(jpeg: bytes, path: str | Path, size: int = 128, quality: int = 82) -> None:
    """Write a JPEG thumbnail (longest side ``size`` px, aspect kept) of image bytes."""
    with Image.open(io.BytesIO(jpeg)) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((size, size))
        thumb.save(path, format="JPEG", quality=quality, optimize=True)


def thumbnail_name(product_id: str, shard: Path, key: str) -> str:
    """A file name unique to the record (readable id + a short hash of its shard and key)."""
    digest = hashlib.sha1(f"{shard.resolve()}::{key}".encode()).hexdigest()[:10]
    return f"{_SAFE.sub('_', product_id)[:40]}-{digest}.jpg"


# ---------------------------------------------------------------------------------------------------- queries
def default_categories(index: SearchIndex, count: int = 12) -> list[str]:
    """Leaf categories with products in the index: up to half held out of training (*unseen*), the rest seen
    ones, each group largest first."""
    sizes = index.category_counts()  # the category columns only, never the whole product table
    tree = CategoryTree.from_json(index.tree)
    present = [p for p in sorted(tree.paths[i] for i in tree.leaves) if sizes[p] > 0]
    unseen = sorted((p for p in present if p in index.unseen), key=lambda p: -sizes[p])
    seen = sorted((p for p in present if p not in index.unseen), key=lambda p: -sizes[p])
    chosen = unseen[: count // 2]
    chosen += seen[: count - len(chosen)]
    return [format_path(p) for p in chosen]


def _read_categories(categories: Sequence[str] | None, categories_file: str | None) -> list[str]:
    out = list(categories or [])
    if categories_file:
        lines = Path(categories_file).read_text(encoding="utf-8").splitlines()
        out += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return out


# --------------------------------------------------------------------------------------------------- the page
_CSS = """
:root { --thumb: %(display)dpx; }
body { font: 13px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 12px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
p.sub { margin: 0 0 10px; color: #555; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; vertical-align: top; text-align: left; }
th.model { font-size: 14px; }
th.model .p { font-weight: normal; color: #555; font-size: 12px; }
td.query { width: 150px; max-width: 150px; }
td.query .q { font-weight: 600; }
td.query .path { color: #666; font-size: 11px; }
.badge { display: inline-block; border-radius: 3px; padding: 0 4px; font-size: 10px; margin-top: 2px; }
.badge.unseen { background: #6a3fb5; color: #fff; }
.badge.seen { background: #e4e4e4; color: #333; }
.badge.free { background: #fff3c4; color: #6b5300; }
.hits { display: flex; flex-wrap: nowrap; gap: 3px; }
.hit { margin: 0; position: relative; width: var(--thumb); }
.hit img { width: var(--thumb); height: var(--thumb); object-fit: contain; background: #fff; display: block;
           box-sizing: border-box; border: 3px solid #bbb; border-radius: 3px; }
.hit.rel img { border-color: #1f9d3a; }
.hit.irr img { border-color: #d33a2c; }
.hit figcaption { position: absolute; left: 3px; top: 3px; background: rgba(0,0,0,.55); color: #fff;
                  font-size: 9px; padding: 0 3px; border-radius: 2px; }
td.model .p { font-size: 11px; color: #444; margin-bottom: 2px; }
.legend span { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 3px 0 10px; }
#image-check { color: #777; font-size: 11px; margin-top: 8px; }
"""

_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = document.images, ok = 0, broken = [];
  for (var i = 0; i < images.length; i++) {
    var good = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute('data-loaded', good ? '1' : '0');
    if (good) { ok++; } else { broken.push(images[i].getAttribute('src')); }
  }
  var check = document.getElementById('image-check');
  check.setAttribute('data-total', String(images.length));
  check.setAttribute('data-ok', String(ok));
  check.setAttribute('data-broken', JSON.stringify(broken));
  check.textContent = ok + ' of ' + images.length + ' thumbnails loaded' +
    (broken.length ? '; broken: ' + broken.join(', ') : '');
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(page: dict[str, Any], display_px: int = 56) -> str:
    """The gallery page for the results dict that :func:`gallery` also writes to ``gallery.json``."""
    models = page["models"]
    k = page["k"]
    head = ['<th class="query">category</th>']
    for model in models:
        p = model["mean_precision"]
        ptext = (
            f"mean P@{k} {p:.2f} over {model['judged_queries']} judged"
            if p is not None
            else "no judged query"
        )
        head.append(f'<th class="model">{_e(model["label"])}<br><span class="p">{_e(ptext)}</span></th>')
    rows = []
    for row in page["rows"]:
        if row["category"] is None:
            badge = '<span class="badge free">free text</span>'
        elif row["unseen"]:
            badge = '<span class="badge unseen">unseen in training</span>'
        else:
            badge = '<span class="badge seen">seen in training</span>'
        path = (
            f'<div class="path">{_e(row["category"])}</div>'
            if row["category"] and row["category"] != row["query"]
            else ""
        )
        count = (
            f'<div class="path">{row["num_relevant"]} relevant in the index</div>' if row["category"] else ""
        )
        cells = [f'<td class="query"><div class="q">{_e(row["query"])}</div>{path}{badge}{count}</td>']
        for result in row["results"]:
            figures = []
            for hit in result["hits"]:
                cls = {True: "rel", False: "irr", None: "unk"}[hit["relevant"]]
                tip = f"{hit['rank']}. {hit['title']} | {hit['category']} | id {hit['id']} | score {hit['score']:.4f}"
                figures.append(
                    f'<figure class="hit {cls}"><img src="{_e(hit["image"])}" alt="{_e(hit["title"])}" '
                    f'title="{_e(tip)}" loading="eager"><figcaption>{hit["rank"]}</figcaption></figure>'
                )
            p = result["precision"]
            if p is not None:
                ceiling = min(result["num_relevant"], k) / k
                ptext = f"P@{k} {p:.1f}" + (f" (at most {ceiling:.1f})" if ceiling < 1 else "")
            elif row["category"] is not None:
                ptext = "no relevant product in the index"
            else:
                ptext = "&nbsp;"
            cells.append(
                f'<td class="model"><div class="p">{ptext}</div><div class="hits">{"".join(figures)}</div></td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    legend = (
        '<span style="background:#1f9d3a"></span>relevant (the query is the product\'s category or an ancestor)'
        '<span style="background:#d33a2c"></span>not relevant'
        '<span style="background:#bbb"></span>free-text query: not judged'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(page['title'])}</title><style>{_CSS % {'display': display_px}}</style></head><body>"
        f"<h1>{_e(page['title'])}</h1>"
        f'<p class="sub">Top {k} products per category query; {len(page["rows"])} queries; '
        f"{_e(', '.join(m['label'] + ': ' + str(m['num_products']) + ' products' for m in models))}.</p>"
        f'<p class="legend sub">{legend}</p>'
        f"<table><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p id="image-check">thumbnails not checked yet</p>'
        f"<script>{_CHECK_SCRIPT}</script></body></html>\n"
    )


# ------------------------------------------------------------------------------------------------- command
def gallery(
    *,
    indexes: list[str],
    output_dir: str,
    categories: list[str] | None = None,
    categories_file: str | None = None,
    labels: list[str] | None = None,
    k: int = 10,
    num_categories: int = 12,
    title: str = "clipita: category-to-image retrieval",
    thumb_px: int = 128,
    display_px: int = 56,
    use_faiss: bool = False,
    faiss_depth: int | None = None,
    shard_dir: str | None = None,
) -> str:
    """Write a static HTML gallery of the top-``k`` images per category query, one column per index.

    Args:
        indexes: index folders written by ``clipita index`` (one per model), shown left to right.
        output_dir: folder for ``index.html``, ``gallery.json`` and ``images/`` (thumbnails; relative links).
        categories: category queries: catalogue paths (``"Footwear > Shoes"``), node names, or any free text.
        categories_file: a text file with one more query per line (``#`` comments).
        labels: column titles, one per index (default: each index folder's name).
        k: images per query and model.
        num_categories: when no query is given, this many leaf categories of the first index are shown (up to
            half of them held out of training).
        title: page title.
        thumb_px: longest side of the thumbnail files.
        display_px: shown size of a thumbnail on the page.
        use_faiss: take each index's FAISS candidates instead of scanning every product; they are re-ranked with
            the model's full score (as ``clipita search --faiss``).
        faiss_depth: FAISS candidates re-ranked per query (default ``max(10 k, 200)``).
        shard_dir: where the shards are, if they moved since indexing (default: each index's ``shard_dir``).

    Returns:
        The path of the HTML page.
    """
    if not indexes:
        raise ValueError("give at least one index folder")
    if labels is not None and len(labels) != len(indexes):
        raise ValueError(f"{len(labels)} labels for {len(indexes)} indexes")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()
    loaded = [SearchIndex.load(folder) for folder in indexes]
    queries = _read_categories(categories, categories_file) or default_categories(loaded[0], num_categories)
    if not queries:
        raise ValueError("no category queries: pass --categories or --categories_file")
    labels = list(labels) if labels else [Path(folder).resolve().name for folder in indexes]
    out = Path(output_dir)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)

    encoders: dict[str, CategoryEncoder] = {}
    per_model: list[list[dict[str, Any]]] = []
    written: dict[str, str] = {}
    for index in loaded:
        ckpt = index.info.checkpoint
        encoder = encoders.setdefault(ckpt, CategoryEncoder(ckpt))
        paths, scores, rows = rank_queries(index, encoder, queries, k, use_faiss=use_faiss, depth=faiss_depth)
        hits_per_query = index.hits(scores, rows)
        if not (shard_dir or index.info.shard_dir):
            raise ValueError(f"{index.folder} records no shard_dir; pass --shard_dir")
        shards = Path(shard_dir or index.info.shard_dir)
        model_rows = []
        counts = index.category_counts()  # {category path: products}, read from the category columns only
        # the hits' own rows of the product tables (shard, key, JPEG byte range), not the whole table
        products = index.product_rows([hit["row"] for hits in hits_per_query for hit in hits])
        for path, hits in zip(paths, hits_per_query, strict=True):
            for hit in hits:
                product = products[hit["row"]]
                shard = shards / str(product["shard"])
                name = thumbnail_name(hit["id"], shard, str(product["key"]))
                if name not in written:
                    jpeg = read_record_jpeg(
                        shard, str(product["key"]), int(product["jpg_offset"]), int(product["jpg_size"])
                    )
                    make_thumbnail(jpeg, out / IMAGES_DIR / name, size=thumb_px)
                    written[name] = hit["id"]
                hit["image"] = f"{IMAGES_DIR}/{name}"
                hit["relevant"] = is_relevant(hit["category_path"], path) if path else None
            num_relevant = None
            if path is not None:
                num_relevant = sum(n for c, n in counts.items() if is_relevant(c, path))
            judged = bool(num_relevant)  # a category with no product in the index cannot be judged
            precision = sum(bool(h["relevant"]) for h in hits) / k if judged else None
            model_rows.append(
                {"path": path, "hits": hits, "precision": precision, "num_relevant": num_relevant}
            )
        per_model.append(model_rows)

    page_rows = []
    for i, query in enumerate(queries):
        first = per_model[0][i]
        path = first["path"]
        page_rows.append(
            {
                "query": query,
                "category": format_path(path) if path else None,
                "unseen": bool(path and path in loaded[0].unseen),
                "num_relevant": first["num_relevant"],
                "results": [
                    {
                        "precision": m[i]["precision"],
                        "num_relevant": m[i]["num_relevant"],
                        "hits": m[i]["hits"],
                    }
                    for m in per_model
                ],
            }
        )
    models = []
    for label, folder, index, model_rows in zip(labels, indexes, loaded, per_model, strict=True):
        judged = [r["precision"] for r in model_rows if r["precision"] is not None]
        models.append(
            {
                "label": label,
                "index": str(Path(folder).resolve()),
                "checkpoint": index.info.checkpoint,
                "modalities": index.info.modalities,
                "num_products": len(index),
                "backend": f"faiss-{index.info.faiss_kind}" if use_faiss else "exact",
                "judged_queries": len(judged),
                "mean_precision": sum(judged) / len(judged) if judged else None,
            }
        )
    page = {"title": title, "k": k, "models": models, "rows": page_rows}
    (out / JSON_NAME).write_text(json.dumps(page, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path = out / HTML_NAME
    html_path.write_text(render_html(page, display_px=display_px), encoding="utf-8")
    summary = ", ".join(
        f"{m['label']} mean P@{k} {m['mean_precision']:.3f}"
        if m["mean_precision"] is not None
        else m["label"]
        for m in models
    )
    print(
        f"Gallery of {len(queries)} queries x {len(models)} models ({len(written)} thumbnails) written to "
        f"{html_path} in {time.perf_counter() - started:.1f} s; {summary}."
    )
    return str(html_path)
