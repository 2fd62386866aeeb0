"""The scorer's weights record (:mod:`clipita_core.weights`): one spelling of the keys, today's records read and
written back unchanged, one policy for old and bad records."""

from __future__ import annotations

import pytest

from clipita_core.weights import (
    DEFAULTS,
    VERSION,
    VERSION_KEY,
    RetrievalWeights,
    weight_key,
)

# The on-disk keys of the checkpoint record's ``retrieval`` dict: a contract with every checkpoint written so far.
RECORD_KEYS = {
    "seen_title_weight",
    "novel_title_weight",
    "seen_image_weight",
    "novel_image_weight",
    "seen_lexical_weight",
    "novel_lexical_weight",
    "novel_parent_weight",
    "descendant_weight",
    "wise_ft_alpha",
}
FULL = {
    "seen_title_weight": 0.25,
    "novel_title_weight": 0.75,
    "seen_image_weight": 0.5,
    "novel_image_weight": 0.125,
    "seen_lexical_weight": 0.3,
    "novel_lexical_weight": 1.0,
    "novel_parent_weight": 0.1,
    "descendant_weight": 2.0,
    "wise_ft_alpha": 0.5,
    "scorer_choice": {"grid": [0.0, 0.5, 1.0], "signals": ["title", "lexical"], "tree": {"grid": [0.0, 0.1]}},
    "wise_ft": {"reason": "val mAP@10", "val_novel_map@10": [0.1, 0.2]},
    "novel_rule": "zero-shot",  # a key this reader does not know: kept as it is
}


def test_the_record_keys_are_the_fields_and_spelled_once() -> None:
    assert set(DEFAULTS) == RECORD_KEYS
    assert {weight_key(side, s) for side in ("seen", "novel") for s in ("title", "image", "lexical")} == {
        k for k in RECORD_KEYS if k.startswith(("seen_", "novel_")) and k != "novel_parent_weight"
    }
    with pytest.raises(ValueError, match="'unseen'"):
        weight_key("unseen", "title")


def test_a_full_record_round_trips_and_reads_typed() -> None:
    weights = RetrievalWeights.from_dict(FULL)
    assert weights.to_dict() == FULL and set(weights.to_dict()) == set(FULL)
    assert weights.pair("title") == (0.25, 0.75) and weights.pair("image") == (0.5, 0.125)
    assert weights.pair("lexical") == (0.3, 1.0) and weights.taxonomy == (0.1, 2.0) and weights.alpha == 0.5
    assert set(weights.evidence) == {"scorer_choice", "wise_ft", "novel_rule"}
    assert RetrievalWeights.from_dict(weights.to_dict()) == weights


def test_an_old_record_takes_the_defaults_and_writes_back_only_its_keys() -> None:
    for record in (None, {}, {"scorer_choice": {"grid": [0.0, 1.0]}}, {"novel_title_weight": 0.5}):
        weights = RetrievalWeights.from_dict(record)
        assert weights.to_dict() == (record or {})
    empty = RetrievalWeights.from_dict({})
    assert empty.pair("title") == (0.0, 1.0) and empty.pair("image") == (0.0, 0.0)
    assert empty.pair("lexical") == (0.0, 0.0) and empty.taxonomy == (0.0, 0.0) and empty.alpha == 1.0
    assert "wise_ft_alpha" not in empty.to_dict()  # "no WiSE-FT choice" stays distinguishable from alpha 1
    assert RetrievalWeights.from_dict({VERSION_KEY: VERSION, "seen_title_weight": 0.5}).to_dict() == {
        "seen_title_weight": 0.5
    }


def test_merged_writes_a_choice_over_the_weights() -> None:
    weights = RetrievalWeights.from_dict({"seen_title_weight": 0.25, "wise_ft_alpha": 0.5})
    merged = weights.merged({"seen_title_weight": 0.5, "scorer_choice": {"epoch": 1}})
    assert merged.to_dict() == {"seen_title_weight": 0.5, "wise_ft_alpha": 0.5, "scorer_choice": {"epoch": 1}}
    assert weights.seen_title_weight == 0.25  # frozen: the original is unchanged


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"novel_title_weight": 1.5}, "novel_title_weight must be in \\[0, 1\\], got 1.5"),
        ({"seen_image_weight": -0.1}, "seen_image_weight must be in \\[0, 1\\]"),
        ({"descendant_weight": -1.0}, "descendant_weight must be >= 0"),
        ({"seen_lexical_weight": "high"}, "seen_lexical_weight must be a number, got 'high'"),
        ({VERSION_KEY: VERSION + 1}, f"retrieval record version {VERSION + 1} is not readable"),
    ],
)
def test_a_bad_record_is_refused_naming_the_key(record, message) -> None:
    with pytest.raises(ValueError, match=message):
        RetrievalWeights.from_dict(record)
