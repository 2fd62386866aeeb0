"""Category paths: the written form round-trips, and the text a category is encoded from."""

from __future__ import annotations

import pytest

from clipita_core.paths import (
    CATEGORY_SEPARATOR,
    CATEGORY_TEXTS,
    category_text_of,
    format_path,
    parse_path,
    split_path,
)


def test_format_and_parse_round_trip():
    path = ("Apparel", "Topwear", "Tshirts")
    assert format_path(path) == "Apparel > Topwear > Tshirts"
    assert parse_path(format_path(path)) == path
    assert parse_path(" Apparel>Topwear  >Tshirts ") == path  # the separator's blanks are optional


def test_split_keeps_empty_levels_parse_drops_them():
    assert split_path("A >  > C") == ("A", "", "C")
    assert parse_path("A >  > C") == ("A", "C")
    assert split_path("A/B", "/") == ("A", "B")
    assert split_path("A  B", "  ") == ("A", "B")  # a blank separator is matched as written


def test_category_text_styles():
    path = ("Apparel", "Topwear")
    assert CATEGORY_TEXTS == ("leaf", "path")
    assert category_text_of(path) == "Topwear"
    assert category_text_of(path, "path") == "Apparel" + CATEGORY_SEPARATOR + "Topwear"
    with pytest.raises(ValueError, match="unknown category text style 'name'"):
        category_text_of(path, "name")
