"""The shared names and the attribute text every tower and store embeds."""

from __future__ import annotations

import typing

from clipita_core.vocabulary import (
    MODALITIES,
    RECORDED_MODALITIES,
    SPLITS,
    Modality,
    Split,
    attribute_texts,
)


def test_names_are_their_literals():
    assert MODALITIES == typing.get_args(Modality) == ("image", "title", "attributes")
    assert RECORDED_MODALITIES == (*MODALITIES, "description")
    assert SPLITS == typing.get_args(Split) == ("train", "val", "test")


def test_attribute_texts_in_name_order_blank_where_absent_or_empty():
    attributes = {"gender": "Men", "colour": "", "season": None, "usage": "Sports"}
    names = ["usage", "gender", "colour", "season", "absent"]
    assert attribute_texts(attributes, names) == ["usage: Sports", "gender: Men", "", "", ""]
