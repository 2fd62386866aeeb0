"""A search index folder loaded for ranking: product embeddings (memory-mapped), the product table, the tree, and
the exact (float32 or float16 + re-ranking) and FAISS top-k scans over it (:class:`SearchIndex`).

FAISS is a candidate generator: it returns the best :func:`faiss_depth` products by the dense dot product, and those
candidates are re-ranked with the model's full score (the ``score`` function :meth:`SearchIndex.topk` is given,
``ClipIta.score`` with the queries' BM25 side: the same function the test evaluation scores with), so a FAISS
search ranks as the exact scan wherever the exact top ``k`` lies within the candidates. When the score has a BM25
term, the best ``faiss_depth`` products by that term alone join the candidates (:func:`with_lexical_candidates`).

The folder's ``index.json`` is read by :func:`clipita_core.index_info.read`: only the current index format (per-shard
arrays under ``shards/``) is read; an index written by an older ``clipita index`` is refused with one line, as old
checkpoints are. Nothing here imports the ``index`` command (nor Lightning or the DataModule).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from clipita_core.index_info import PRODUCTS_NAME, IndexInfo
from clipita_core.index_info import read as read_index_info
from clipita_core.paths import CategoryPath
from datamodules.features import LEXICAL_TOKENS
from lightning_modules.metrics.ranking import running_topk, select_topk, truncate_ranking

from .faiss_index import LexicalTerm, ScoreFn, faiss_depth, rerank_topk, with_lexical_candidates
from .index_shards import EMBEDDING, EMBEDDING16, PRODUCTS, IndexShards, ShardedRows
from .parquet_rows import count_parquet_values, read_parquet_rows

ScanDtype = Literal["float32", "float16"]


def split_query(query: str) -> list[str]:
    """``"A > B > C"`` (any spacing around ``>``) -> ``["A", "B", "C"]``; a plain name -> ``[name]``."""
    parts = [p.strip() for p in query.split(">")]
    return [p for p in parts if p] or [query.strip()]


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
        half_emb: ``[N, D]`` float16 rows: the index shards' ``embedding16`` arrays (memory-mapped) or an
            in-memory copy (:func:`half_precision_copy`).
        full_emb: ``[N, D]`` float32 embeddings (a tensor, a memory-mapped array or
            :class:`~clipita.retrieval.index_shards.ShardedRows`).
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
        scores = (q16 @ torch.as_tensor(half_emb[start : start + chunk_size]).T).float()
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


def scored_topk(
    query_emb: torch.Tensor, embeddings: Any, tokens: Any, k: int, score: ScoreFn, chunk_size: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` rows by ``score(query_emb, embeddings chunk, tokens chunk)``, chunk by chunk (the running top-k
    and tie rule of :func:`running_topk`: equal scores rank by lower row)."""
    best_scores = torch.empty(query_emb.shape[0], 0)
    best_rows = torch.empty(query_emb.shape[0], 0, dtype=torch.long)
    for start in range(0, len(embeddings), chunk_size):
        vectors = torch.as_tensor(np.asarray(embeddings[start : start + chunk_size]), dtype=torch.float32)
        rows = torch.as_tensor(np.asarray(tokens[start : start + chunk_size]))
        values, positions = select_topk(score(query_emb.float(), vectors, rows).float().cpu(), k)
        best_scores = torch.cat([best_scores, values], dim=1)
        best_rows = torch.cat([best_rows, positions + start], dim=1)
        best_scores, best_rows = truncate_ranking(best_scores, best_rows, k=k)
    return best_scores, best_rows


# ------------------------------------------------------------------------------------------------ the index
def _category_path(product: dict[str, Any]) -> CategoryPath:
    """A product's category path (stored as a JSON list of names)."""
    return tuple(json.loads(product["category_path"]))


@dataclass
class SearchIndex:
    """An index folder written by ``clipita index``: product embeddings, metadata, and optionally FAISS.

    Attributes:
        folder: the index folder.
        info: ``index.json`` (:class:`~clipita_core.index_info.IndexInfo`).
        embeddings: float32 ``[N, D]``, memory-mapped (read-only): the shards' arrays seen as one
            (:class:`~clipita.retrieval.index_shards.ShardedRows`).
        products: ``products.parquet`` (row i describes embedding row i) whole, read on first use (tests and
            small indexes); the commands read only what they need: the hits' rows (:meth:`product_rows`) and the
            category column (:meth:`category_counts`).
    """

    folder: Path
    info: IndexInfo
    embeddings: Any
    _products: pd.DataFrame | None = field(default=None, repr=False)
    _category_counts: Counter | None = field(default=None, repr=False)
    _faiss: Any = field(default=None, repr=False)
    _half_rows: ShardedRows | None = field(default=None, repr=False)
    _shards: IndexShards | None = field(default=None, repr=False)

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> SearchIndex:
        """Read an index folder (the embeddings memory-mapped, read-only, unless ``mmap=False``)."""
        folder = Path(folder)
        info = read_index_info(folder)
        shards = IndexShards(folder, info.shards, arrays=list(info.arrays or (EMBEDDING, EMBEDDING16)))
        embeddings: Any = shards.rows(EMBEDDING)
        half = shards.rows(EMBEDDING16) if EMBEDDING16 in shards.arrays else None
        if not mmap:
            embeddings = np.asarray(embeddings)
        count = sum(s.count for s in shards.shards)  # the shards' tables are read row by row for the hits
        if embeddings.ndim != 2 or embeddings.shape[0] != count:
            raise ValueError(
                f"{folder}: {embeddings.shape[0]} embedding rows but {count} products in the metadata"
            )
        return cls(folder, info, embeddings, _half_rows=half, _shards=shards)

    @property
    def products(self) -> pd.DataFrame:
        """Every product's metadata (``products.parquet``), read whole on first use (tests and small indexes; the
        commands read only the rows they need: :meth:`product_rows`)."""
        if self._products is None:
            self._products = pd.read_parquet(self._products_path())
        return self._products

    def _products_path(self) -> Path:
        return self.folder / PRODUCTS_NAME

    def _product_tables(self) -> list[tuple[Path, int]]:
        """``(parquet file, its first row)`` of the shards' own tables, which hold the products."""
        assert self._shards is not None, "SearchIndex.load() reads the shards"
        offsets = np.cumsum([0] + [s.count for s in self._shards.shards])
        return [
            (self._shards.path(s.name, PRODUCTS), int(offsets[i]))
            for i, s in enumerate(self._shards.shards)
            if s.count
        ]

    def product_row(self, row: int) -> dict[str, Any]:
        """Product ``row``'s metadata (see :meth:`product_rows`)."""
        return self.product_rows([row])[row]

    def product_rows(self, rows: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The metadata of products ``rows`` (``{row: {column: value}}``): from the whole table when it is loaded,
        else only those rows, read from the shards' own tables holding them: memory independent of the index size."""
        wanted = sorted({int(r) for r in rows})
        if self._products is not None:
            return {r: self.products.iloc[r].to_dict() for r in wanted}
        if wanted and (wanted[0] < 0 or wanted[-1] >= len(self)):
            raise IndexError(
                f"product rows {wanted[0]}..{wanted[-1]} outside the index's {len(self)} products"
            )
        tables = self._product_tables()
        starts = np.array([start for _, start in tables])
        which = np.searchsorted(starts, wanted, side="right") - 1
        out: dict[int, dict[str, Any]] = {}
        for t in np.unique(which):
            path, start = tables[int(t)]
            local = read_parquet_rows(path, [r - start for r, w in zip(wanted, which, strict=True) if w == t])
            out.update((start + r, product) for r, product in local.items())
        return out

    def category_counts(self) -> Counter[CategoryPath]:
        """How many products have each category path (read once from the category columns only, batch by batch:
        no product table is loaded whole)."""
        if self._category_counts is None:
            columns = ("category_path", "category")
            raw = count_parquet_values([path for path, _ in self._product_tables()], columns)
            counts: Counter[CategoryPath] = Counter()
            for values, count in raw.items():
                counts[_category_path(dict(zip(columns, values, strict=True)))] += count
            self._category_counts = counts
        return self._category_counts

    def array(self, name: str) -> ShardedRows:
        """A per-product array stored beside the embeddings
        (:data:`clipita.retrieval.index_shards.EXTRA_ARRAYS`), row i = product i, memory-mapped."""
        if self._shards is None or name not in self._shards.arrays:
            have = list(self._shards.arrays) if self._shards is not None else []
            raise KeyError(f"{self.folder} stores no per-product array {name!r} (it has {have})")
        return self._shards.rows(name)

    def has_array(self, name: str) -> bool:
        return self._shards is not None and name in self._shards.arrays

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def tree(self) -> list[CategoryPath]:
        return list(self.info.tree)

    @property
    def unseen(self) -> set[CategoryPath]:
        return set(self.info.unseen_categories)

    @property
    def has_faiss(self) -> bool:
        return bool(self.info.faiss) and (self.folder / self.info.faiss_file).is_file()

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
        params = self.info.faiss
        if self._faiss is None:
            self._faiss = faiss.read_index(str(self.folder / self.info.faiss_file))
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
        score: ScoreFn | None = None,
        depth: int | None = None,
        lexical: LexicalTerm | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` product rows per query by dot product (or by ``score``).

        Args:
            query_emb: ``[Q, D]`` category embeddings.
            k: results per query (at most the index size).
            use_faiss: take the FAISS index's best ``depth`` products by dot product as candidates (with
                ``lexical``, and each query's best ``depth`` by its BM25 term: :func:`with_lexical_candidates`) and
                re-rank them by ``score`` (:func:`rerank_topk`) instead of scanning every product.
            chunk_size: products scored at once.
            ef_search: HNSW beam override (default: the stored beam, at least ``depth``).
            nprobe: IVF lists override.
            score: ``(queries, product vectors [c, D], lexical tokens [c, L]) -> [Q, c]`` scores, e.g.
                ``ClipIta.score`` with the queries' BM25 side, over the embeddings and the stored
                ``lexical_tokens``: the exact float32 scan, or the re-ranking of FAISS's candidates. None: the dot
                product.
            scan: without ``score``: ``float32``, the exact scan (:func:`running_topk`) of the memory-mapped
                float32 shards; ``float16``, a half-precision scan of the shards' float16 arrays for a shortlist,
                re-scored in float32 (:func:`half_scan_topk`): about half the memory traffic.
            depth: FAISS candidates per query (:func:`faiss_depth`), and as many lexical ones.
            lexical: the BM25 term of ``score`` alone (``None`` when it has none): with ``use_faiss``, the
                products it ranks best join FAISS's candidates; the exact scans ignore it (``score`` holds it).

        Returns:
            ``(scores [Q, k'], rows [Q, k'])`` best first; FAISS pads missing results with row ``-1``.
        """
        if query_emb.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"query embeddings have {query_emb.shape[1]} dims, the index {self.embeddings.shape[1]}"
            )
        k = min(k, len(self))
        tokens = None
        if score is not None or lexical is not None:
            if not self.has_array(LEXICAL_TOKENS):
                raise ValueError(
                    f"{self.folder} stores no lexical tokens but the checkpoint scores with a BM25 term; rebuild the "
                    "index with this version of clipita index (from the feature cache)"
                )
            tokens = self.array(LEXICAL_TOKENS)
        with warnings.catch_warnings():  # torch warns about the read-only memory maps; nothing writes to them
            warnings.filterwarnings("ignore", message=".*not writable.*")
            if use_faiss:
                depth = min(len(self), faiss_depth(k, depth))
                index = self.faiss_index(ef_search, nprobe)
                if ef_search is None and self.info.faiss_kind == "hnsw":
                    index.hnsw.efSearch = max(index.hnsw.efSearch, depth)
                _, candidates = index.search(
                    np.ascontiguousarray(query_emb.detach().float().cpu().numpy()), depth
                )
                if lexical is not None:
                    candidates = with_lexical_candidates(candidates, lexical, tokens, depth, chunk_size)
                return rerank_topk(query_emb.cpu(), candidates, self.embeddings, tokens, k, score, chunk_size)
            if score is not None:
                return scored_topk(query_emb, self.embeddings, tokens, k, score, chunk_size)
            if scan == "float16":
                if self._half_rows is None:
                    raise ValueError(f"{self.folder} stores no float16 embeddings; use the float32 scan")
                return half_scan_topk(
                    query_emb.cpu(), self._half_rows, self.embeddings, k, chunk_size=chunk_size
                )
            if scan != "float32":
                raise ValueError(f"scan must be 'float32' or 'float16', got {scan!r}")
            scores, rows = running_topk(query_emb.float(), self.embeddings, k=k, chunk_size=chunk_size)
        return scores.cpu(), rows.cpu()

    def category_path(self, row: int) -> CategoryPath:
        """The category path of product ``row`` (stored as a JSON list of names)."""
        return _category_path(self.product_row(row))

    def hits(self, scores: torch.Tensor, rows: torch.Tensor) -> list[list[dict[str, Any]]]:
        """Ranked result dicts per query: ``rank``, ``row``, ``id`` (the original product id), ``title``,
        ``category`` (display string), ``category_path`` (list of names), ``split``, ``score``."""
        out = []
        products = self.product_rows([r for r in rows.flatten().tolist() if r >= 0])
        for score_row, index_row in zip(scores.tolist(), rows.tolist(), strict=True):
            ranked = []
            for score, row in zip(score_row, index_row, strict=True):
                if row < 0:
                    continue
                product = products[row]
                ranked.append(
                    {
                        "rank": len(ranked) + 1,
                        "row": int(row),
                        "id": str(product["id"]),
                        "title": str(product["title"]),
                        "category": str(product["category"]),
                        "category_path": list(_category_path(product)),
                        "split": str(product["split"]),
                        "score": float(score),
                    }
                )
            out.append(ranked)
        return out
