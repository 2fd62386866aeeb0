"""The leakage guard: does a product's own text (or id) name its own leaf category?

When text or ids spell out the label (folder-tree file names like ``Granny-Smith_011.jpg``, titles made from
them), every text model is scored on the leaked label and a leaderboard built on it is meaningless. The guard
measures, per text field, the share of products whose field contains their own leaf category's name, compared
token-wise, ignoring case and punctuation (``"Granny-Smith"`` is in ``"granny smith 011"``; a trailing plural
``s`` is ignored on longer words). A field is *flagged* when most products of most leaves leak: more than half
of the leaves have more than half of their products leaking. It is a warning with the measured share, not an
error: fashion titles legitimately name the article type.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from clipita_core.paths import format_path

TEXT_FIELDS = ("title", "attributes", "description")
FIELDS = (*TEXT_FIELDS, "id")
MAJORITY = 0.5
_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens, trailing plural ``s`` dropped from words longer than three letters."""
    out = []
    for token in _TOKEN.findall(text.casefold()):
        out.append(token[:-1] if len(token) > 3 and token.endswith("s") else token)
    return out


def names_label(text_tokens: Sequence[str], label_tokens: Sequence[str]) -> bool:
    """True when ``label_tokens`` appear, in order and next to each other, in ``text_tokens``."""
    n = len(label_tokens)
    if n == 0 or n > len(text_tokens):
        return False
    first = label_tokens[0]
    return any(
        text_tokens[i] == first and list(text_tokens[i : i + n]) == list(label_tokens)
        for i in range(len(text_tokens) - n + 1)
    )


def leakage_report(
    products: Iterable[tuple[Sequence[str], dict[str, str]]], max_examples: int = 10
) -> dict[str, Any]:
    """Measure label leakage.

    Args:
        products: ``(category path, {field: text})`` per product; fields among :data:`FIELDS` (``id`` is the
            part of the id that is not a category folder, e.g. a folder tree's file name).
        max_examples: Leaf paths listed under ``leaves_flagged_examples``.

    Returns:
        ``{"rule", "fields": {field: {"share", "leaves_leaking", "leaves", "products_with_field", "flagged"}},
        "share" (products whose title/attributes/description leak), "flagged", "flagged_fields",
        "leaves_flagged" (leaves where most products' text leaks), "leaves", "leaves_flagged_examples"}``.
    """
    per_leaf: dict[tuple[str, ...], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    totals: dict[str, list[int]] = {f: [0, 0] for f in (*FIELDS, "text")}  # [leaking, with field]
    label_cache: dict[str, list[str]] = {}
    n_products = 0
    for path, fields in products:
        path = tuple(path)
        n_products += 1
        leaf = path[-1]
        label = label_cache.setdefault(leaf, tokens(leaf))
        counts = per_leaf[path]
        any_text = False
        for field in FIELDS:
            text = fields.get(field) or ""
            leaks = bool(text) and names_label(tokens(text), label)
            counts[field][0] += leaks
            counts[field][1] += 1
            totals[field][0] += leaks
            totals[field][1] += bool(text)
            if field in TEXT_FIELDS:
                any_text = any_text or leaks
        counts["text"][0] += any_text
        counts["text"][1] += 1
        totals["text"][0] += any_text
    n_leaves = len(per_leaf)

    def leaking_leaves(field: str) -> list[tuple[str, ...]]:
        return sorted(p for p, c in per_leaf.items() if c[field][0] > MAJORITY * c[field][1])

    report_fields = {}
    for field in FIELDS:
        leaking = leaking_leaves(field)
        report_fields[field] = {
            "share": round(totals[field][0] / n_products, 4) if n_products else 0.0,
            "products_with_field": totals[field][1],
            "leaves_leaking": len(leaking),
            "leaves": n_leaves,
            "flagged": bool(n_leaves) and len(leaking) > MAJORITY * n_leaves,
        }
    text_leaves = leaking_leaves("text")
    flagged_fields = [f for f in TEXT_FIELDS if report_fields[f]["flagged"]]
    return {
        "rule": "a field leaks for a product when it contains the product's own leaf category name (token-wise, "
        "case and punctuation ignored); a field is flagged when more than half of the leaves have more than "
        "half of their products leaking",
        "fields": report_fields,
        "share": round(totals["text"][0] / n_products, 4) if n_products else 0.0,
        "flagged": bool(flagged_fields),
        "flagged_fields": flagged_fields,
        "id_flagged": report_fields["id"]["flagged"],
        "leaves_flagged": len(text_leaves),
        "leaves": n_leaves,
        "leaves_flagged_examples": [format_path(p) for p in text_leaves[:max_examples]],
    }


def describe_leakage(report: dict[str, Any]) -> str:
    """One sentence for the shard summary."""
    fields = report.get("fields", {})
    if report.get("flagged"):
        parts = [
            f"{fields[f]['share']:.0%} of products' {f} ({fields[f]['leaves_leaking']} of {fields[f]['leaves']} "
            "leaves)"
            for f in report["flagged_fields"]
        ]
        return (
            f"Leakage guard: the text names the product's own leaf category for {'; '.join(parts)}: "
            "scores of models and baselines using that text are inflated."
        )
    text = f"Leakage guard: {report.get('share', 0.0):.0%} of products' text names their own leaf category"
    text += " (not flagged)."
    if report.get("id_flagged"):
        text += f" Ids name the leaf for {fields['id']['share']:.0%} of products (no model reads ids)."
    return text
