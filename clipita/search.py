"""``clipita search``: rank an index's products for any free-text category name.

    clipita search --index work/fashion/index/clip_ita "Footwear > Shoes > Sports Shoes" -k 10 [--json] [--faiss]

The query goes through the checkpoint's category tower (the frozen text encoder + the trained category head), so
any text works: a category of the catalogue tree, one held out of training, or one the catalogue never had. A query
written as a path (``"A > B > C"``) is encoded the way the model was trained: by its last name when the model's
``category_text`` is ``leaf``, as the whole path when it is ``path``.

Ranking is an exact dot product over all products with :func:`~lightning_modules.metrics.retrieval_functional.running_topk`
(chunked; ties by lower product row), or, with ``--faiss``, an approximate one through the FAISS index that
``clipita index --faiss true`` built.

Library use::

    searcher = Searcher.load("work/fashion/index/clip_ita")
    results = searcher.search(["Sports Shoes", "Summer dresses"], k=10)
    results[0]["results"][0]  # {"rank": 1, "id": ..., "title": ..., "category": ..., "split": ..., "score": ...}
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from datamodules.category_tree import format_path
from lightning_modules.metrics.retrieval_functional import running_topk, select_topk, truncate_ranking
from lightning_modules.model import category_text_of

from .index import FAISS_NAME, INDEX_JSON

CategoryPath = tuple[str, ...]
ScanDtype = Literal["float32", "float16"]


# ------------------------------------------------------------------------------------------ category queries
def split_query(query: str) -> list[str]:
    """``"A > B > C"`` (any spacing around ``>``) -> ``["A", "B", "C"]``; a plain name -> ``[name]``."""
    parts = [p.strip() for p in query.split(">")]
    return [p for p in parts if p] or [query.strip()]


def query_text(query: str, style: str = "leaf") -> str:
    """The text the category tower encodes for a free-text ``query`` that names no catalogue category, written as
    the model saw category names in training (a category of the tree is encoded from its own path instead).

    Args:
        query: a free-text category, optionally a path ``"A > B > C"``.
        style: the model's ``category_text``: ``leaf`` (the last name) or ``path`` (the whole path).

    Example:
        >>> query_text("Footwear >  Shoes > Sports Shoes"), query_text("Footwear > Shoes", "path")
        ('Sports Shoes', 'Footwear > Shoes')
    """
    return category_text_of(split_query(query), style)


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def resolve_category(query: str, tree: Sequence[Sequence[str]]) -> CategoryPath | None:
    """The catalogue category a query names, if any.

    In order: a path written in full (``"A > B > C"``, case and spacing ignored; names may themselves contain
    ``" > "``), then a node's own name. A name held by several nodes resolves when they lie on one branch (e.g.
    ``Accessories > Watches`` and its only child ``... > Watches``): the shallowest, whose products include the
    others'. Names on different branches stay ambiguous (None), as do categories the tree does not have.

    Args:
        query: the free-text query.
        tree: every node's path (``index.json``'s ``tree``).
    """
    wanted = _key(query)
    paths = [tuple(p) for p in tree]
    full = [p for p in paths if _key(format_path(p)) == wanted]
    if len(full) == 1:
        return full[0]
    split = tuple(_key(p) for p in split_query(query))
    full = [p for p in paths if tuple(_key(n) for n in p) == split]
    if len(full) == 1:
        return full[0]
    named = sorted(
        (p for p in paths if _key(p[-1]) in (wanted, split[-1] if len(split) == 1 else None)), key=len
    )
    if named and all(p[: len(named[0])] == named[0] for p in named):
        return named[0]
    return None


def is_relevant(product_category: Sequence[str], query_path: Sequence[str]) -> bool:
    """Hierarchical relevance, the metric's rule (:func:`lightning_modules.metrics.relevant_categories`) on paths:
    the query is the product's category or one of its ancestors."""
    ancestors = [tuple(product_category[: i + 1]) for i in range(len(product_category))]
    return tuple(query_path) in ancestors


# ------------------------------------------------------------------------------------------------- ranking
def half_precision_copy(embeddings: np.ndarray, chunk_size: int = 262144) -> torch.Tensor:
    """A float16 copy of ``[N, D]`` embeddings, converted chunk by chunk (the float32 rows are never all resident)."""
    out = torch.empty(embeddings.shape, dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        for start in range(0, len(embeddings), chunk_size):
            out[start : start + chunk_size] = torch.as_tensor(embeddings[start : start + chunk_size])
    return out


def half_scan_topk(
    query_emb: torch.Tensor,
    half_emb: torch.Tensor,
    full_emb: np.ndarray | torch.Tensor,
    k: int,
    candidates: int | None = None,
    chunk_size: int = 262144,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` by a float16 scan for candidates, then float32 re-scoring of the candidates only.

    The scan reads half the bytes of a float32 scan (scoring is memory-bound on a CPU), keeping the best
    ``candidates`` (default ``max(4k, k + 32)``) per query under the tie rule; the candidates' float32 rows are
    then scored exactly and ranked (:func:`truncate_ranking`). The result equals the float32 ranking unless a true
    top-``k`` product falls below the ``candidates``-th float16 score, i.e. unless float16 rounding (~1e-3 of a
    score) reorders more than ``candidates - k`` products: ``benchmarks/bench_search_latency.py`` measures it.

    Args:
        query_emb: ``[Q, D]``.
        half_emb: ``[N, D]`` float16 copy of the embeddings (:func:`half_precision_copy`).
        full_emb: ``[N, D]`` float32 embeddings (a tensor or a memory-mapped array).
        k: results per query.
        candidates: float16 shortlist per query.
        chunk_size: products scored at once.

    Returns:
        ``(scores [Q, k'], rows [Q, k'])``, float32 scores, best first.
    """
    n = half_emb.shape[0]
    m = min(n, max(k, candidates or max(4 * k, k + 32)))
    q16 = query_emb.to(torch.float16)
    best_scores = torch.empty(q16.shape[0], 0)
    best_rows = torch.empty(q16.shape[0], 0, dtype=torch.long)
    for start in range(0, n, chunk_size):
        scores = (q16 @ half_emb[start : start + chunk_size].T).float()
        values, positions = select_topk(scores, m)
        best_scores = torch.cat([best_scores, values], dim=1)
        best_rows = torch.cat([best_rows, positions + start], dim=1)
        best_scores, best_rows = truncate_ranking(best_scores, best_rows, k=m)
    unique, inverse = torch.unique(best_rows, return_inverse=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        rows = torch.as_tensor(np.asarray(full_emb[unique.numpy()]), dtype=torch.float32)
    exact = torch.einsum("qmd,qd->qm", rows[inverse], query_emb.float())
    return truncate_ranking(exact, best_rows, k=k)


# ------------------------------------------------------------------------------------------------ the index
@dataclass
class SearchIndex:
    """An index folder written by ``clipita index``: product embeddings, metadata, and optionally FAISS.

    Attributes:
        folder: the index folder.
        info: ``index.json``.
        products: ``products.parquet`` (row i describes embedding row i).
        embeddings: float32 ``[N, D]``, memory-mapped.
    """

    folder: Path
    info: dict[str, Any]
    products: pd.DataFrame
    embeddings: np.ndarray
    _faiss: Any = field(default=None, repr=False)
    _half: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> SearchIndex:
        """Read an index folder (the embeddings memory-mapped unless ``mmap=False``)."""
        folder = Path(folder)
        info_path = folder / INDEX_JSON
        if not info_path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a clipita index (no {INDEX_JSON}); build one with clipita index"
            )
        info = json.loads(info_path.read_text())
        files = info.get("files", {})
        embeddings = np.load(
            folder / files.get("embeddings", "embeddings.npy"), mmap_mode="r" if mmap else None
        )
        products = pd.read_parquet(folder / files.get("products", "products.parquet"))
        if embeddings.ndim != 2 or embeddings.shape[0] != len(products):
            raise ValueError(
                f"{folder}: {embeddings.shape[0]} embedding rows but {len(products)} products in the metadata"
            )
        return cls(folder, info, products, embeddings)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def tree(self) -> list[tuple[str, ...]]:
        return [tuple(p) for p in self.info.get("tree", [])]

    @property
    def unseen(self) -> set[tuple[str, ...]]:
        return {tuple(p) for p in self.info.get("unseen_categories", [])}

    @property
    def has_faiss(self) -> bool:
        return (
            bool(self.info.get("faiss"))
            and (self.folder / self.info["faiss"].get("file", FAISS_NAME)).is_file()
        )

    def faiss_index(self, ef_search: int | None = None, nprobe: int | None = None) -> Any:
        """The FAISS index (loaded once), with its stored (or the given) search-time parameters."""
        if not self.has_faiss:
            raise FileNotFoundError(
                f"{self.folder} has no FAISS index: rebuild with clipita index --faiss true"
            )
        try:
            import faiss
        except ImportError as exc:
            raise ImportError("--faiss needs faiss-cpu: pip install 'clipita[faiss]'") from exc
        params = self.info["faiss"]
        if self._faiss is None:
            self._faiss = faiss.read_index(str(self.folder / params.get("file", FAISS_NAME)))
        if params["kind"] == "hnsw":
            self._faiss.hnsw.efSearch = ef_search or params.get("ef_search", 128)
        elif params["kind"] == "ivf":
            self._faiss.nprobe = nprobe or params.get("nprobe", 8)
        return self._faiss

    def topk(
        self,
        query_emb: torch.Tensor,
        k: int,
        use_faiss: bool = False,
        chunk_size: int = 65536,
        ef_search: int | None = None,
        nprobe: int | None = None,
        scan: ScanDtype = "float32",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` product rows per query by dot product.

        Args:
            query_emb: ``[Q, D]`` category embeddings.
            k: results per query (at most the index size).
            use_faiss: search the FAISS index instead of the exact chunked scan.
            chunk_size: products scored at once by the exact scan.
            ef_search: HNSW beam override.
            nprobe: IVF lists override.
            scan: ``float32``: the exact scan (:func:`running_topk`); ``float16``: a half-precision scan of an
                in-memory float16 copy (made on first use) for a shortlist, re-scored in float32
                (:func:`half_scan_topk`): about half the memory traffic.

        Returns:
            ``(scores [Q, k'], rows [Q, k'])`` best first; FAISS pads missing results with row ``-1``.
        """
        if query_emb.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"query embeddings have {query_emb.shape[1]} dims, the index {self.embeddings.shape[1]}"
            )
        k = min(k, len(self))
        if use_faiss:
            index = self.faiss_index(ef_search, nprobe)
            if ef_search is None and self.info["faiss"]["kind"] == "hnsw":
                index.hnsw.efSearch = max(index.hnsw.efSearch, k)
            q = np.ascontiguousarray(query_emb.detach().float().cpu().numpy())
            scores, rows = index.search(q, k)
            return torch.from_numpy(scores), torch.from_numpy(rows.astype(np.int64))
        if scan == "float16":
            if self._half is None:
                self._half = half_precision_copy(self.embeddings)
            scores, rows = half_scan_topk(
                query_emb.cpu(), self._half, self.embeddings, k, chunk_size=chunk_size
            )
            return scores, rows
        if scan != "float32":
            raise ValueError(f"scan must be 'float32' or 'float16', got {scan!r}")
        # torch warns once about the read-only memory map; nothing writes to it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            scores, rows = running_topk(query_emb.float(), self.embeddings, k=k, chunk_size=chunk_size)
        return scores.cpu(), rows.cpu()

    def category_path(self, row: int) -> CategoryPath:
        """The category path of product ``row`` (stored as a JSON list of names; older indexes as a display
        string)."""
        products = self.products
        if "category_path" in products.columns:
            return tuple(json.loads(products["category_path"].iat[row]))
        return tuple(split_query(str(products["category"].iat[row])))

    def hits(self, scores: torch.Tensor, rows: torch.Tensor) -> list[list[dict[str, Any]]]:
        """Ranked result dicts per query: ``rank``, ``row``, ``id``, ``title``, ``category``, ``split``, ``score``."""
        out = []
        for score_row, index_row in zip(scores.tolist(), rows.tolist(), strict=True):
            ranked = []
            for score, row in zip(score_row, index_row, strict=True):
                if row < 0:
                    continue
                product = self.products.iloc[row]
                ranked.append(
                    {
                        "rank": len(ranked) + 1,
                        "row": int(row),
                        "id": str(product["id"]),
                        "title": str(product["title"]),
                        "category": str(product["category"]),
                        "split": str(product["split"]),
                        "score": float(score),
                    }
                )
            out.append(ranked)
        return out


# ------------------------------------------------------------------------------------------ category tower
class CategoryEncoder:
    """The query side of a checkpoint: category queries -> retrieval vectors, through :func:`lightning_modules.load_model`
    and :meth:`~lightning_modules.ClipIta.encode_query_texts` (the same call the test evaluation makes), so a query
    naming a catalogue category ranks exactly as that category does in the leaderboard, novel ones included.

    Args:
        ckpt: the model checkpoint.
        device: where the tower runs.
    """

    def __init__(self, ckpt: str | Path, device: str = "cpu") -> None:
        from lightning_modules import load_model

        self.net = load_model(ckpt, map_location=device)
        self.style = self.net.category_text

    def texts(self, queries: Sequence[str], paths: Sequence[CategoryPath | None] | None = None) -> list[str]:
        """What the tower encodes: a resolved category from its own path, free text as the model's style says."""
        paths = paths or [None] * len(queries)
        return [
            category_text_of(p, self.style) if p else query_text(q, self.style)
            for q, p in zip(queries, paths, strict=True)
        ]

    @torch.no_grad()
    def encode(
        self, queries: Sequence[str], paths: Sequence[CategoryPath | None] | None = None
    ) -> torch.Tensor:
        """``[Q, D]`` retrieval vectors of the queries; ``paths`` are the catalogue categories they name (or None)."""
        return self.net.encode_query_texts(self.texts(queries, paths), paths).float()


class Searcher:
    """An index plus the category tower of the checkpoint it was built with.

    Args:
        index: the loaded index.
        encoder: the category tower (default: from ``index.info["checkpoint"]``).
    """

    def __init__(self, index: SearchIndex, encoder: CategoryEncoder | None = None) -> None:
        self.index = index
        self.encoder = encoder or CategoryEncoder(index.info["checkpoint"])

    @classmethod
    def load(cls, folder: str | Path, ckpt: str | None = None, device: str = "cpu") -> Searcher:
        index = SearchIndex.load(folder)
        return cls(index, CategoryEncoder(ckpt or index.info["checkpoint"], device=device))

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        use_faiss: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
        scan: ScanDtype = "float32",
    ) -> list[dict[str, Any]]:
        """Top-``k`` products for each free-text category.

        Returns:
            One dict per query: ``query``, ``query_text`` (what the tower encoded), ``category`` (the catalogue
            path it names, or None), ``unseen`` (held out of training), ``results`` (see :meth:`SearchIndex.hits`).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        tree, unseen = self.index.tree, self.index.unseen
        paths = [resolve_category(query, tree) for query in queries]
        emb = self.encoder.encode(queries, paths)
        scores, rows = self.index.topk(
            emb, k, use_faiss=use_faiss, ef_search=ef_search, nprobe=nprobe, scan=scan
        )
        out = []
        for query, path, text, hits in zip(
            queries, paths, self.encoder.texts(queries, paths), self.index.hits(scores, rows), strict=True
        ):
            out.append(
                {
                    "query": query,
                    "query_text": text,
                    "category": format_path(path) if path else None,
                    "unseen": bool(path and path in unseen),
                    "results": hits,
                }
            )
        return out


# ------------------------------------------------------------------------------------------------------ CLI
def format_results(result: dict[str, Any], title_width: int = 48) -> str:
    """A plain-text table of one query's results."""
    if result["category"]:
        known = f"catalogue category {result['category']!r}" + (
            " (unseen in training)" if result["unseen"] else ""
        )
    else:
        known = "not a catalogue category"
    lines = [f"{result['query']}  [encoded as {result['query_text']!r}; {known}]"]
    lines.append(f"{'rank':>4}  {'score':>7}  {'id':<14} {'title':<{title_width}} category")
    for hit in result["results"]:
        title = hit["title"] if len(hit["title"]) <= title_width else hit["title"][: title_width - 3] + "..."
        lines.append(
            f"{hit['rank']:>4}  {hit['score']:>7.4f}  {hit['id']:<14} {title:<{title_width}} {hit['category']}"
        )
    if not result["results"]:
        lines.append("  (no results)")
    return "\n".join(lines)


def backend_name(faiss_kind: str | None, scan: str = "float32") -> str:
    """``exact``, ``float16-rerank`` or ``faiss-<kind>``: how a result list was ranked."""
    if faiss_kind:
        return f"faiss-{faiss_kind}"
    return "exact" if scan == "float32" else "float16-rerank"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipita search",
        description="Rank the products of a clipita index for free-text category names (any text: catalogue "
        "categories, held-out ones, or new ones).",
    )
    parser.add_argument("queries", nargs="+", help='category names, e.g. "Footwear > Shoes > Sports Shoes"')
    parser.add_argument("--index", required=True, help="index folder written by clipita index")
    parser.add_argument("-k", "--top_k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--faiss", action="store_true", help="search the approximate FAISS index")
    parser.add_argument("--ef_search", type=int, default=None, help="FAISS HNSW beam (default: as built)")
    parser.add_argument(
        "--nprobe", type=int, default=None, help="FAISS IVF lists scanned (default: as built)"
    )
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint of the category tower (default: the index's)"
    )
    parser.add_argument("--device", default="cpu", help="device of the category tower and exact scan")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for the scan (default: torch's default)"
    )
    parser.add_argument(
        "--scan",
        choices=["float32", "float16"],
        default="float32",
        help="exact float32 scan, or a float16 scan + float32 re-ranking of a shortlist (half the memory traffic)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Entry point of ``clipita search`` (takes the argument list after ``search``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.top_k < 1:
        raise SystemExit(f"clipita search: -k must be >= 1, got {args.top_k}")
    if args.threads:
        torch.set_num_threads(args.threads)
    index = SearchIndex.load(args.index)
    if args.faiss and not index.has_faiss:
        raise SystemExit(
            f"clipita search: {args.index} has no FAISS index; rebuild with clipita index --faiss true"
        )
    searcher = Searcher(index, CategoryEncoder(args.ckpt or index.info["checkpoint"], device=args.device))
    results = searcher.search(
        args.queries,
        k=args.top_k,
        use_faiss=args.faiss,
        ef_search=args.ef_search,
        nprobe=args.nprobe,
        scan=args.scan,
    )
    if args.json:
        payload = {
            "index": str(Path(args.index)),
            "backend": backend_name(args.faiss and index.info["faiss"]["kind"], args.scan),
            "k": args.top_k,
            "queries": results,
        }
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print("\n\n".join(format_results(r) for r in results))
    return results


if __name__ == "__main__":
    main()
