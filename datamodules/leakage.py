"""The leakage guard: does a product's own text (or id) name its own category, at the leaf or any level above?

When text or ids spell out the label (folder-tree file names like ``Granny-Smith_011.jpg``, titles made from
them), every text model is scored on the leaked label and a leaderboard built on it is meaningless. The guard
measures, per text field, the share of products whose field names their own leaf category, and, per level of the
path, the share whose text names that level's category. Words are compared the way the lexical signal's tokenizer
sees them (:mod:`clipita_core.tokens`: NFKC, case, punctuation and stopwords ignored, plural forms stemmed), and a
name matches neighbouring words written apart, hyphenated or joined: ``"T-Shirts"`` is in ``"Men's Tshirt"`` and in
``"t shirt"``, ``"Granny-Smith"`` in ``"granny smith 011"``. A field is *flagged* when most products of most
leaves leak: more than half of the leaves have more than half of their products leaking. It is a warning with the
measured share, not an error: fashion titles legitimately name the article type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from clipita_core.paths import format_path
from clipita_core.tokens import STOPWORDS, plural_stem, word_parts

TEXT_FIELDS = ("title", "attributes", "description")
FIELDS = (*TEXT_FIELDS, "id")
MAJORITY = 0.5


def tokens(text: str) -> list[str]:
    """The text's words as the lexical tokenizer normalises and stems them; short words kept, compounds not yet
    joined (:func:`names_label` joins neighbours).

    >>> tokens("Men's T-Shirts"), tokens("The Tshirts")
    (['men', 's', 't', 'shirt'], ['tshirt'])
    """
    return [plural_stem(p) for p in word_parts(text) if p not in STOPWORDS]


def names_label(text_tokens: Sequence[str], label_tokens: Sequence[str]) -> bool:
    """True when neighbouring ``text_tokens``, joined, spell ``label_tokens`` joined: in order and next to each
    other, written apart, hyphenated or as one word (``t shirt``, ``t-shirt`` and ``tshirt`` name ``T-Shirts``)."""
    label = "".join(label_tokens)
    if not label:
        return False
    for start in range(len(text_tokens)):
        joined = ""
        for token in text_tokens[start:]:
            joined += token
            if not label.startswith(joined):
                break
            if len(joined) == len(label):
                return True
    return False


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
        "share" (products whose title/attributes/description name their leaf), "flagged", "flagged_fields",
        "leaves_flagged" (leaves where most products' text leaks), "leaves", "leaves_flagged_examples",
        "levels": [{"level" (1 = top), "products" (those whose path has that level), "share" (of them, whose
        text names their category at that level), "fields": {field: share}}, ...]}``. The leaf figures and flags
        are those of each product's own leaf, whatever its depth.
    """
    per_leaf: dict[tuple[str, ...], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    totals: dict[str, list[int]] = {f: [0, 0] for f in (*FIELDS, "text")}  # [leaking, with field]
    per_level: dict[int, dict[str, int]] = defaultdict(
        lambda: defaultdict(int)
    )  # level -> field/text -> leaking
    label_cache: dict[str, list[str]] = {}
    n_products = 0
    for path, fields in products:
        path = tuple(path)
        n_products += 1
        labels = [label_cache.setdefault(name, tokens(name)) for name in path]
        texts = {f: tokens(fields.get(f) or "") for f in FIELDS}
        for level, label in enumerate(labels, start=1):
            leaks = {f: names_label(texts[f], label) for f in FIELDS}
            counts = per_level[level]
            counts["products"] += 1
            counts["text"] += any(leaks[f] for f in TEXT_FIELDS)
            for field in FIELDS:
                counts[field] += leaks[field]
        counts = per_leaf[path]  # the leaf is the last level: its figures are the ones just counted
        for field in FIELDS:
            counts[field][0] += leaks[field]
            counts[field][1] += 1
            totals[field][0] += leaks[field]
            totals[field][1] += bool(fields.get(field))
        any_text = any(leaks[f] for f in TEXT_FIELDS)
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
        "rule": "a field leaks for a product when it names the product's own category (the lexical tokenizer's "
        "words: case, punctuation and stopwords ignored, plurals stemmed, neighbouring words joined); per leaf "
        "and per level of the path; a field is flagged when more than half of the leaves have more than half of "
        "their products leaking their leaf",
        "fields": report_fields,
        "share": round(totals["text"][0] / n_products, 4) if n_products else 0.0,
        "flagged": bool(flagged_fields),
        "flagged_fields": flagged_fields,
        "id_flagged": report_fields["id"]["flagged"],
        "leaves_flagged": len(text_leaves),
        "leaves": n_leaves,
        "leaves_flagged_examples": [format_path(p) for p in text_leaves[:max_examples]],
        "levels": [
            {
                "level": level,
                "products": c["products"],
                "share": round(c["text"] / c["products"], 4),
                "fields": {f: round(c[f] / c["products"], 4) for f in FIELDS},
            }
            for level, c in sorted(per_level.items())
        ],
    }


def describe_leakage(report: dict[str, Any]) -> str:
    """One sentence for the shard summary (and one for the levels above the leaf, where the path has them)."""
    fields = report.get("fields", {})
    if report.get("flagged"):
        parts = [
            f"{fields[f]['share']:.0%} of products' {f} ({fields[f]['leaves_leaking']} of {fields[f]['leaves']} "
            "leaves)"
            for f in report["flagged_fields"]
        ]
        text = (
            f"Leakage guard: the text names the product's own leaf category for {'; '.join(parts)}: "
            "scores of models and baselines using that text are inflated."
        )
    else:
        text = (
            f"Leakage guard: {report.get('share', 0.0):.0%} of products' text names their own leaf category"
        )
        text += " (not flagged)."
        if report.get("id_flagged"):
            text += f" Ids name the leaf for {fields['id']['share']:.0%} of products (no model reads ids)."
    levels = report.get("levels") or []
    if len(levels) > 1:
        named = ", ".join(f"level {x['level']} {x['share']:.0%}" for x in levels)
        text += f" Text naming the product's category at each level of the path: {named}."
    return text
