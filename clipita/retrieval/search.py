"""``clipita search``: rank an index's products for any free-text category name.

    clipita search --index work/fashion/index/clip_ita "Footwear > Shoes > Sports Shoes" -k 10 [--json] [--faiss]

The query goes through the checkpoint's category tower (the frozen text encoder + the trained category head), so
any text works: a category of the catalogue tree, one held out of training, or one the catalogue never had. A query
written as a path (``"A > B > C"``) is encoded the way the model was trained: by its last name when the model's
``category_text`` is ``leaf``, as the whole path when it is ``path``.

Ranking is an exact dot product over all products with :func:`~lightning_modules.metrics.ranking.running_topk`
(chunked over the index's memory-mapped, read-only per-shard arrays; ties by lower product row; ``--scan float16``
scans the shards' float16 arrays and re-ranks a shortlist in float32), or, with ``--faiss``, through the FAISS index
that ``clipita index --faiss true`` built, as a candidate generator: its best ``--faiss_depth`` products by the dense
dot product (default ``max(10 k, 200)``) are re-ranked with the model's full score, the one the exact scan and the
test evaluation use (``ClipIta.score``: the dense blocks, with the title, image-only and tree terms the checkpoint's
retrieval record chose, plus its BM25 term over the index's lexical tokens). When a query's BM25 weight is non-zero,
its best ``--faiss_depth`` products by the BM25 term alone join the dense candidates (lexical candidates: products
that only a strong word match lifts into the top ``k`` are not near the query in the dense space).

Library use::

    searcher = Searcher.load("work/fashion/index/clip_ita")
    results = searcher.search(["Sports Shoes", "Summer dresses"], k=10)
    results[0]["results"][0]  # {"rank": 1, "id": ..., "title": ..., "category": ..., "category_path": [...], ...}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from clipita_core.paths import CategoryPath, category_text_of, format_path

from .faiss_index import LexicalTerm, ScoreFn, faiss_depth
from .search_index import SearchIndex, split_query

ScanDtype = Literal["float32", "float16"]


# ------------------------------------------------------------------------------------------ category queries
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

    def scorer(
        self, queries: Sequence[str], paths: Sequence[CategoryPath | None] | None = None
    ) -> tuple[ScoreFn | None, LexicalTerm | None]:
        """``(score, lexical)``: ``score`` is ``(queries, vectors, lexical tokens) -> scores`` when the model adds a
        BM25 term (``ClipIta.score`` with the queries' lexical side, what evaluation scores with), else None (a plain
        dot product); ``lexical`` is that BM25 term alone (what lexical candidates rank by), else None."""
        lexical = getattr(self.net, "lexical_query", None)
        query = lexical(self.texts(queries, paths), paths) if lexical is not None else None
        if query is None:
            return None, None
        return (lambda q, vectors, tokens: self.net.score(q, vectors, query, tokens)), LexicalTerm(
            self.net.lexical, query
        )


def rank_queries(
    index: SearchIndex, encoder: CategoryEncoder, queries: Sequence[str], k: int, **topk_options: Any
) -> tuple[list[CategoryPath | None], torch.Tensor, torch.Tensor]:
    """The one ranking of category queries over an index (``clipita search`` and ``clipita gallery``): each query's
    catalogue path resolved on the index's tree, its vector from the checkpoint's query encoder, and the model's
    scorer (a lexical model's BM25 term included), as the test scores, in the exact scan and in the re-ranking of
    FAISS's candidates alike, lexical candidates joining FAISS's where the BM25 term is live (``topk_options``:
    :meth:`SearchIndex.topk`'s). Returns ``(paths, scores, rows)``."""
    paths = [resolve_category(query, index.tree) for query in queries]
    score, lexical = encoder.scorer(queries, paths)
    scores, rows = index.topk(encoder.encode(queries, paths), k, score=score, lexical=lexical, **topk_options)
    return paths, scores, rows


class Searcher:
    """An index plus the category tower of the checkpoint it was built with.

    Args:
        index: the loaded index.
        encoder: the category tower (default: from ``index.info.checkpoint``).
    """

    def __init__(self, index: SearchIndex, encoder: CategoryEncoder | None = None) -> None:
        self.index = index
        self.encoder = encoder or CategoryEncoder(index.info.checkpoint)

    @classmethod
    def load(cls, folder: str | Path, ckpt: str | None = None, device: str = "cpu") -> Searcher:
        index = SearchIndex.load(folder)
        return cls(index, CategoryEncoder(ckpt or index.info.checkpoint, device=device))

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        use_faiss: bool = False,
        ef_search: int | None = None,
        nprobe: int | None = None,
        scan: ScanDtype = "float32",
        faiss_depth: int | None = None,
    ) -> list[dict[str, Any]]:
        """Top-``k`` products for each free-text category (``use_faiss``: FAISS's best ``faiss_depth`` candidates
        re-ranked by the full score, :meth:`SearchIndex.topk`).

        Returns:
            One dict per query: ``query``, ``query_text`` (what the tower encoded), ``category`` (the catalogue
            path it names, or None), ``unseen`` (held out of training), ``results`` (see :meth:`SearchIndex.hits`).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        unseen = self.index.unseen
        paths, scores, rows = rank_queries(
            self.index,
            self.encoder,
            queries,
            k,
            use_faiss=use_faiss,
            ef_search=ef_search,
            nprobe=nprobe,
            scan=scan,
            depth=faiss_depth,
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
                    "category_path": list(path) if path else None,
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
    parser.add_argument(
        "--faiss",
        action="store_true",
        help="take candidates from the approximate FAISS index and re-rank them with the model's full score",
    )
    parser.add_argument(
        "--faiss_depth",
        type=int,
        default=None,
        help="FAISS candidates re-ranked per query, and as many BM25 ones when the checkpoint has a BM25 weight "
        "(default max(10 k, 200))",
    )
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
    if args.faiss_depth is not None and args.faiss_depth < 1:
        raise SystemExit(f"clipita search: --faiss_depth must be >= 1, got {args.faiss_depth}")
    if args.threads:
        torch.set_num_threads(args.threads)
    index = SearchIndex.load(args.index)
    if args.faiss and not index.has_faiss:
        raise SystemExit(
            f"clipita search: {args.index} has no FAISS index; rebuild with clipita index --faiss true"
        )
    searcher = Searcher(index, CategoryEncoder(args.ckpt or index.info.checkpoint, device=args.device))
    results = searcher.search(
        args.queries,
        k=args.top_k,
        use_faiss=args.faiss,
        ef_search=args.ef_search,
        nprobe=args.nprobe,
        scan=args.scan,
        faiss_depth=args.faiss_depth,
    )
    if args.json:
        payload = {
            "index": str(Path(args.index)),
            "backend": backend_name(args.faiss and index.info.faiss_kind, args.scan),
            "k": args.top_k,
            "faiss_depth": min(len(index), faiss_depth(args.top_k, args.faiss_depth)) if args.faiss else None,
            "queries": results,
        }
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print("\n\n".join(format_results(r) for r in results))
    return results


if __name__ == "__main__":
    main()
