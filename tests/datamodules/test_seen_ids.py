"""The duplicate-id table answers exactly as a dict of id -> first row would, through its growth."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profiles import ci_settings

from datamodules.catalogue.seen_ids import SeenIds


def test_matches_a_dict_through_many_doublings() -> None:
    rng = random.Random(0)
    ids = [f"sku-{rng.randrange(3000)}" for _ in range(5000)]  # ~1/3 repeats, ~2500 distinct
    seen, reference = SeenIds(capacity=16), {}
    for row, product_id in enumerate(ids, start=1):
        assert seen.first_row(product_id, row) == reference.get(product_id)
        reference.setdefault(product_id, row)
    assert len(seen) == len(reference)


@ci_settings(60)
@given(st.lists(st.text(max_size=6), max_size=60))
def test_any_text_ids_including_lone_surrogates(ids: list[str]) -> None:
    ids = ids + ["\udcff", "a\udc80"]  # undecodable bytes as the readers keep them (surrogateescape)
    seen, reference = SeenIds(capacity=4), {}
    for row, product_id in enumerate(ids, start=1):
        assert seen.first_row(product_id, row) == reference.get(product_id)
        reference.setdefault(product_id, row)


def test_rows_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        SeenIds().first_row("x", 0)
