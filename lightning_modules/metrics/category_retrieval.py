"""Category-to-image retrieval metrics (the CLIP-ITA protocol) as one streaming, DDP-safe torchmetrics Metric.

The ranking it keeps is :mod:`.ranking`'s, the metric math :mod:`.retrieval_functional`'s and the relevance rule
:mod:`.relevance`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from .ranking import PAD_INDEX, score_chunk, select_topk, truncate_ranking
from .relevance import Relevance, count_relevant, relevant_categories
from .retrieval_functional import (
    APNormalization,
    average_precision_at_k,
    ndcg_at_k,
    precision_at_k,
    precision_ceiling_at_k,
    r_precision,
    recall_at_k,
    reciprocal_rank,
)


class CategoryRetrievalMetrics(Metric):
    """Category-to-image retrieval over a whole gallery: P@k, mAP@k, R-precision, MRR, nDCG, Recall, per setting.

    **Protocol** (CLIP-ITA, Hendriksen et al., ECIR 2022). Each query is a category (a row of the category table,
    embedded by the category-name encoder). The gallery is every product of a split. Products are ranked by the dot
    product of their embedding with the query's; metrics are averaged over the queries of a group (``all``,
    ``general`` = top level, ``level-N``, ``specific`` = leaves, ``specific_unseen``, ...).

    **Relevance** (:mod:`.relevance`): ``hierarchical`` (default) -- a product is relevant to its category and every
    ancestor of it -- or ``strict`` -- to its deepest category only. Queries with ``R = 0`` are excluded.

    **Streaming state** (independent of the gallery size). Per query the metric keeps the best ``max_rank`` products
    seen so far -- their scores, product indices and relevance flags, ``[Q, max_rank]`` each -- plus ``R`` (how many
    relevant products the gallery holds, ``[Q]``) and the number of products seen. ``update`` scores a batch in
    chunks of ``chunk_size`` products (and blocks of ``query_chunk_size`` queries), takes each chunk's exact top
    ``max_rank`` -- skipping, block-wise, products below the current ``max_rank``-th score, which cannot enter
    (:func:`.ranking.select_topk`) -- and merges. Equal scores rank by product index, lower first: the index is the
    arrival order unless ``product_index`` is given, so the result does not depend on how products were batched (see
    :mod:`.ranking` for the tie rule and :mod:`.retrieval_functional` for how it relates to torchmetrics).

    **Distributed.** Buffers are reduced with ``cat`` and merged in ``compute`` (the states of ``n`` ranks arrive
    stacked, ``[n, Q, max_rank]``, and are re-ranked into one ``[Q, max_rank]``); counts with ``sum``.
    :meth:`merge_state` works the same way. Two caveats: (1) across ranks the arrival index restarts at 0 on every
    rank, so exact ties between ranks are broken by rank order; pass ``product_index`` (the product's position in the
    split) to reproduce the single-process ranking exactly; (2) a ``DistributedSampler`` that pads the split repeats
    a few products, which are then counted twice -- evaluate with ``use_distributed_sampler=False`` + a sharded
    loader that does not pad, or accept the error (at most ``world_size - 1`` duplicates).

    **Caps.** Everything is computed on the kept ranking of length ``K = max_rank``: P@k, mAP@k, nDCG@k and Recall@k
    are exact for ``k <= K``; R-precision of a query with ``R > K`` is ``hits@K / R`` (a lower bound) and MRR is
    MRR@K (0 when the first relevant product is below rank ``K``).

    Args:
        ks: cut-offs for ``p@k``, ``p@k_ceiling`` and ``map@k`` (``map@1`` equals ``p@1``).
        max_rank: ranking depth kept per query (``K``).
        relevance: ``"hierarchical"`` or ``"strict"`` (above).
        chunk_size: products scored at once in :meth:`update`. The score block is
            ``4 * min(Q, query_chunk_size) * chunk_size`` bytes; long rows keep ``torch.topk`` efficient.
        ndcg_ks: cut-offs for ``ndcg@k``.
        recall_ks: cut-offs for ``recall@k``.
        query_chunk_size: queries scored at once (None = all). Bounds the score block independently of
            ``chunk_size``: 5,000 queries x 65,536 products is 1.3 GB, in blocks of 1,250 queries 0.33 GB.
        ap_normalization: ``"hits"`` (torchmetrics ``RetrievalMAP(top_k=k)``) or ``"min_r_k"``; see
            :func:`.retrieval_functional.average_precision_at_k`.
        **kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    References:
        Hendriksen, Bleeker, Vakulenko, van Noord, Kuiper, de Rijke. *Extending CLIP for Category-to-image Retrieval
        in E-commerce.* ECIR 2022.

    Example:
        >>> metric = CategoryRetrievalMetrics(ks=(1, 2), max_rank=3, ndcg_ks=(3,), recall_ks=(3,))
        >>> # category table: 0 = "A", 1 = "B", 2 = "A > x"; queries are all three rows
        >>> queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
        >>> metric.set_queries(queries, {"all": torch.tensor([True, True, True]),
        ...                              "specific": torch.tensor([False, True, True])})
        >>> products = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
        >>> category_ids = torch.tensor([[0, 2], [1, -1], [0, -1]])  # "A > x", "B", "A"
        >>> metric.update(products, category_ids)
        >>> out = metric.compute()
        >>> round(float(out["all/p@1"]), 4), int(out["all/num_queries"]), round(float(out["specific/map@2"]), 4)
        (1.0, 3, 1.0)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    top_scores: Tensor
    top_index: Tensor
    top_relevant: Tensor
    num_relevant: Tensor
    num_products: Tensor

    def __init__(
        self,
        ks: Sequence[int] = (1, 5, 10),
        max_rank: int = 1000,
        relevance: Relevance = "hierarchical",
        chunk_size: int = 65536,
        ndcg_ks: Sequence[int] = (10,),
        recall_ks: Sequence[int] = (10,),
        query_chunk_size: int | None = None,
        ap_normalization: APNormalization = "hits",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if relevance not in ("hierarchical", "strict"):
            raise ValueError(f"unknown relevance {relevance!r}; expected 'hierarchical' or 'strict'")
        if ap_normalization not in ("hits", "min_r_k"):
            raise ValueError(f"unknown ap_normalization {ap_normalization!r}; expected 'hits' or 'min_r_k'")
        all_ks = [*ks, *ndcg_ks, *recall_ks]
        if max_rank < 1 or chunk_size < 1 or (query_chunk_size or 1) < 1 or any(k < 1 for k in all_ks):
            raise ValueError("max_rank, chunk_size, query_chunk_size and every k must be >= 1")
        if all_ks and max(all_ks) > max_rank:
            raise ValueError(f"every k must be <= max_rank={max_rank}, got {max(all_ks)}")
        self.ks = tuple(int(k) for k in ks)
        self.ndcg_ks = tuple(int(k) for k in ndcg_ks)
        self.recall_ks = tuple(int(k) for k in recall_ks)
        self.max_rank = int(max_rank)
        self.relevance: Relevance = relevance
        self.chunk_size = int(chunk_size)
        self.query_chunk_size = None if query_chunk_size is None else int(query_chunk_size)
        self.ap_normalization: APNormalization = ap_normalization
        self.query_embeddings: Tensor | None = None
        self.query_ids: Tensor | None = None
        self.settings: dict[str, Tensor] = {}
        self._scratch: Tensor | None = None
        self._histogram_size = 1
        self._add_states(0)
        # torchmetrics wraps ``update`` to invalidate the cached ``compute`` result and count updates; the second
        # entry point needs the same wrapper.
        self.update_scores = self._wrap_update(self.update_scores)  # type: ignore[method-assign]

    # -------------------------------------------------------------------------------------------------- queries
    def _add_states(self, num_queries: int) -> None:
        shape, dev = (num_queries, self.max_rank), self.device
        self.add_state("top_scores", torch.full(shape, float("-inf"), device=dev), dist_reduce_fx="cat")
        self.add_state(
            "top_index", torch.full(shape, PAD_INDEX, dtype=torch.long, device=dev), dist_reduce_fx="cat"
        )
        self.add_state("top_relevant", torch.zeros(shape, dtype=torch.bool, device=dev), dist_reduce_fx="cat")
        self.add_state(
            "num_relevant", torch.zeros(num_queries, dtype=torch.long, device=dev), dist_reduce_fx="sum"
        )
        self.add_state("num_products", torch.zeros((), dtype=torch.long, device=dev), dist_reduce_fx="sum")

    @property
    def num_queries(self) -> int:
        return 0 if self.query_embeddings is None else int(self.query_embeddings.shape[0])

    def set_queries(
        self,
        query_embeddings: Tensor,
        settings: dict[str, Tensor] | None = None,
        query_ids: Tensor | None = None,
    ) -> None:
        """Fix the queries of this evaluation and reset the state (call once per epoch, before any update).

        Args:
            query_embeddings: ``[Q, D]`` category embeddings (detached; kept as a plain attribute, not state).
            settings: ``{name: BoolTensor [Q]}`` query subsets to average over; ``"all"`` is added when absent.
            query_ids: ``[Q]`` the category-table row of each query (default ``arange(Q)``: query ``i`` is row
                ``i``, i.e. every node of the table is a query).
        """
        if query_embeddings.ndim != 2:
            raise ValueError(f"query_embeddings must be [Q, D], got {tuple(query_embeddings.shape)}")
        nq = query_embeddings.shape[0]
        ids = torch.arange(nq) if query_ids is None else torch.as_tensor(query_ids, dtype=torch.long)
        if ids.shape != (nq,):
            raise ValueError(f"query_ids must be [Q]={nq}, got {tuple(ids.shape)}")
        groups = {"all": torch.ones(nq, dtype=torch.bool)}
        for name, mask in (settings or {}).items():
            mask = torch.as_tensor(mask, dtype=torch.bool)
            if mask.shape != (nq,):
                raise ValueError(
                    f"setting {name!r} must be a bool mask of shape [{nq}], got {tuple(mask.shape)}"
                )
            groups[name] = mask
        self.query_embeddings = query_embeddings.detach()
        self.query_ids = ids.to(self.device)
        self._histogram_size = int(ids.max()) + 2 if nq else 1
        self.settings = {k: v.to(self.device) for k, v in groups.items()}
        self._add_states(nq)
        self.reset()

    def _check_ready(self, num_products: int, category_ids: Tensor) -> None:
        if self.query_embeddings is None:
            raise RuntimeError("call set_queries(query_embeddings, settings) before update")
        if category_ids.ndim != 2 or category_ids.shape[0] != num_products:
            raise ValueError(f"category_ids must be [B={num_products}, L], got {tuple(category_ids.shape)}")

    # --------------------------------------------------------------------------------------------------- update
    def update(
        self, product_embeddings: Tensor, category_ids: Tensor, product_index: Tensor | None = None
    ) -> None:
        """Score a batch of products against every query and fold it into the running rankings.

        Args:
            product_embeddings: ``[B, D]`` product embeddings (same space as the queries).
            category_ids: ``[B, L]`` ancestor table ids per product, ``-1`` padded.
            product_index: ``[B]`` global product indices for tie-breaking (default: arrival order).
        """
        b = product_embeddings.shape[0]
        self._check_ready(b, category_ids)
        device = product_embeddings.device
        queries = self.query_embeddings.to(device)
        self.query_embeddings = queries
        index = self._product_index(b, product_index, device)
        nq = queries.shape[0]
        q_step = min(nq, self.query_chunk_size or nq)
        scratch = self._scratch_for(queries, product_embeddings, q_step * min(b, self.chunk_size))
        for start in range(0, b, self.chunk_size):
            stop = min(b, start + self.chunk_size)
            products, relevant_to = (
                product_embeddings[start:stop],
                self._relevant_to(category_ids[start:stop], device),
            )
            for q0 in range(0, nq, q_step):
                rows = slice(q0, min(nq, q0 + q_step))
                scores = score_chunk(queries[rows], products, out=scratch)
                self._absorb(scores, relevant_to, index[start:stop], rows)
            self._count(relevant_to)
        self.num_products += b

    def update_scores(
        self, scores: Tensor, category_ids: Tensor, product_index: Tensor | None = None
    ) -> None:
        """Fold precomputed query-product scores into the rankings (score-based baselines such as BM25).

        Args:
            scores: ``[Q, B]`` score of every query against every product of the batch (higher = better).
            category_ids: ``[B, L]`` ancestor table ids per product, ``-1`` padded.
            product_index: ``[B]`` global product indices for tie-breaking (default: arrival order).
        """
        b = scores.shape[1]
        self._check_ready(b, category_ids)
        if scores.shape[0] != self.num_queries:
            raise ValueError(f"scores must be [Q={self.num_queries}, B], got {tuple(scores.shape)}")
        index = self._product_index(b, product_index, scores.device)
        for start in range(0, b, self.chunk_size):
            stop = min(b, start + self.chunk_size)
            relevant_to = self._relevant_to(category_ids[start:stop], scores.device)
            self._absorb(scores[:, start:stop], relevant_to, index[start:stop], slice(None))
            self._count(relevant_to)
        self.num_products += b

    def _product_index(self, b: int, product_index: Tensor | None, device: torch.device) -> Tensor:
        if product_index is None:
            return self.num_products.to(device) + torch.arange(b, device=device)
        product_index = torch.as_tensor(product_index, dtype=torch.long, device=device)
        if product_index.shape != (b,):
            raise ValueError(f"product_index must be [B={b}], got {tuple(product_index.shape)}")
        return product_index

    def _scratch_for(self, queries: Tensor, products: Tensor, need: int) -> Tensor | None:
        """A reused score buffer of ``need`` elements on CPU (fresh large blocks are page-faulted in every time)."""
        if queries.device.type != "cpu":
            return None
        dtype = torch.promote_types(torch.promote_types(queries.dtype, products.dtype), torch.float32)
        if self._scratch is None or self._scratch.dtype != dtype or self._scratch.numel() < need:
            self._scratch = None
            self._scratch = torch.empty(need, dtype=dtype)
        return self._scratch

    def _relevant_to(self, category_ids: Tensor, device: torch.device) -> Tensor:
        """``[B, L']`` categories each product of the chunk is relevant to (``-1`` = none)."""
        return relevant_categories(category_ids.to(device), self.relevance)

    def _absorb(self, scores: Tensor, relevant_to: Tensor, index: Tensor, rows: slice) -> None:
        """Merge the top ``max_rank`` of a ``[rows, chunk]`` score block (with relevance flags) into the buffers."""
        # items below the current max_rank-th score cannot enter: select_topk prunes them block-wise
        values, positions = select_topk(scores, self.max_rank, index=index, floor=self.top_scores[rows, -1])
        qids = self.query_ids.to(scores.device)[rows]
        rel = (relevant_to[positions] == qids[:, None, None]).any(dim=2)  # [rows, k']
        merged = truncate_ranking(
            torch.cat([self.top_scores[rows], values.to(self.top_scores.dtype)], dim=1),
            torch.cat([self.top_index[rows], index[positions]], dim=1),
            torch.cat([self.top_relevant[rows], rel], dim=1),
            k=self.max_rank,
        )
        if rows == slice(None):
            self.top_scores, self.top_index, self.top_relevant = merged
        else:
            self.top_scores[rows], self.top_index[rows], self.top_relevant[rows] = merged

    def _count(self, relevant_to: Tensor) -> None:
        """Add the chunk's relevant products per query to ``R``."""
        qids = self.query_ids.to(relevant_to.device)
        self.num_relevant += count_relevant(relevant_to, qids, self._histogram_size)

    # ---------------------------------------------------------------------------------------- merge / forward
    def _folded(self) -> tuple[Tensor, Tensor, Tensor]:
        """The buffers as one ``[Q, K]`` ranking, whatever number of rank/merge blocks ``cat`` stacked up."""
        nq, k = self.num_queries, self.max_rank
        blocks = self.top_scores.numel() // max(1, nq * k)
        scores = self.top_scores.reshape(blocks, nq, k)
        if blocks == 1:
            return scores[0], self.top_index.reshape(nq, k), self.top_relevant.reshape(nq, k)

        def side_by_side(t: Tensor) -> Tensor:
            return t.reshape(blocks, nq, k).permute(1, 0, 2).reshape(nq, blocks * k)

        return truncate_ranking(
            side_by_side(self.top_scores), side_by_side(self.top_index), side_by_side(self.top_relevant), k=k
        )

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """``merge_state``: concatenate like DDP does, then fold straight back to ``[Q, K]`` so state stays small."""
        super()._reduce_states(incoming_state)
        self.top_scores, self.top_index, self.top_relevant = self._folded()
        self._computed = None  # the cached compute() result is stale now
        self._update_count += 1

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Same as :meth:`update`: a per-batch value of a whole-gallery ranking metric means nothing."""
        self.update(*args, **kwargs)

    def reset(self) -> None:
        """Reset the rankings and counts (keeps the queries) and release the CPU score buffer."""
        super().reset()
        self._scratch = None

    # -------------------------------------------------------------------------------------------------- compute
    def _per_query(self) -> dict[str, Tensor]:
        scores, _, rel = self._folded()
        r = self.num_relevant
        out: dict[str, Tensor] = {}
        for k in self.ks:
            out[f"p@{k}"] = precision_at_k(rel, k)
            out[f"p@{k}_ceiling"] = precision_ceiling_at_k(r, k)
        for k in self.ks:
            out[f"map@{k}"] = average_precision_at_k(rel, r, k, normalization=self.ap_normalization)
        out["r_precision"] = r_precision(rel, r)
        out["mrr"] = reciprocal_rank(rel)
        for k in self.ndcg_ks:
            out[f"ndcg@{k}"] = ndcg_at_k(rel, r, k, scores_topk=scores)
        for k in self.recall_ks:
            out[f"recall@{k}"] = recall_at_k(rel, r, k)
        return out

    def compute(self) -> dict[str, Tensor]:
        """Group means: ``{f"{group}/{name}": scalar}`` plus ``f"{group}/num_queries"``.

        Each mean is over the group's queries with ``R >= 1`` (a query with no relevant product in the gallery has
        no defined precision and is left out; ``num_queries`` counts the ones kept). An empty group gives NaN.
        """
        if self.query_embeddings is None:
            raise RuntimeError("call set_queries before compute")
        values = self._per_query()
        has_relevant = self.num_relevant > 0
        out: dict[str, Tensor] = {}
        for group, mask in self.settings.items():
            keep = mask.to(has_relevant.device) & has_relevant
            n = keep.sum()
            for name, per_query in values.items():
                out[f"{group}/{name}"] = (
                    per_query[keep].sum() / n if n > 0 else per_query.new_tensor(float("nan"))
                )
            out[f"{group}/num_queries"] = n.float()
        return out

    def _synced(self) -> contextlib.AbstractContextManager:
        """Gather the states of all ranks for the duration of the block (a no-op outside DDP)."""
        return self.sync_context(should_sync=self._to_sync)

    def compute_per_query(self) -> dict[str, Tensor]:
        """Per-query values ``{name: [Q]}`` (NaN where ``R == 0``) plus ``num_relevant``: for per-category CSVs and
        paired significance tests (:func:`.significance.paired_test`). Synchronises across ranks like ``compute``.
        """
        if self.query_embeddings is None:
            raise RuntimeError("call set_queries before compute_per_query")
        with self._synced():
            values = self._per_query()
            r = self.num_relevant.clone()
        missing = r == 0
        out = {name: v.masked_fill(missing, float("nan")) for name, v in values.items()}
        out["num_relevant"] = r
        return out

    def ranking(self) -> tuple[Tensor, Tensor, Tensor]:
        """The kept rankings ``(scores, product_index, relevant)``, each ``[Q, max_rank]``, best first.

        Empty slots (gallery smaller than ``max_rank``) have score ``-inf`` and index ``PAD_INDEX``. Feed the indices
        to :func:`.error_analysis.error_analysis` or a search UI.
        """
        with self._synced():
            return tuple(t.clone() for t in self._folded())
