"""Retrieval evaluation: the category-to-image protocol as a torchmetrics Metric, the ranking (top-k under one tie
rule) and the metric math it is computed with, paired significance tests and the CLIP-ITA error analysis."""

from __future__ import annotations

from .category_retrieval import CategoryRetrievalMetrics
from .error_analysis import error_analysis, node_ancestors
from .hierarchy_consistency import hierarchy_consistency, macro_over_trees, per_tree_consistency
from .ranking import PAD_INDEX, ranking_order, running_topk, score_chunk, select_topk, truncate_ranking
from .relevance import product_leaves, relevant_categories
from .retrieval_functional import (
    average_precision_at_k,
    hits_at_k,
    ndcg_at_k,
    precision_at_k,
    precision_ceiling_at_k,
    r_precision,
    recall_at_k,
    reciprocal_rank,
    tie_averaged_gains,
)
from .significance import adjust_p_values, compare_per_query, paired_test

__all__ = [
    "PAD_INDEX",
    "CategoryRetrievalMetrics",
    "adjust_p_values",
    "compare_per_query",
    "error_analysis",
    "average_precision_at_k",
    "hierarchy_consistency",
    "hits_at_k",
    "macro_over_trees",
    "ndcg_at_k",
    "node_ancestors",
    "paired_test",
    "per_tree_consistency",
    "precision_at_k",
    "precision_ceiling_at_k",
    "product_leaves",
    "r_precision",
    "ranking_order",
    "recall_at_k",
    "reciprocal_rank",
    "relevant_categories",
    "running_topk",
    "score_chunk",
    "select_topk",
    "tie_averaged_gains",
    "truncate_ranking",
]
