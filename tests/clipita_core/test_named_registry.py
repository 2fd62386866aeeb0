"""The named registry: one table from which names, Literal, messages and help text are derived."""

from __future__ import annotations

import typing

import pytest

from clipita_core.registry import Registry


def test_names_lookup_literal_and_help_follow_registration_order():
    reg = Registry("colour", {"red": 1})
    reg.add("green", 2)

    @reg.register("blue")
    def blue():
        return 3

    assert reg.names == ("red", "green", "blue") and list(reg) == list(reg.names) and len(reg) == 3
    assert reg["green"] == 2 and reg["blue"]() == 3 and "red" in reg and "pink" not in reg
    assert typing.get_args(reg.literal) == ("red", "green", "blue")
    assert reg.help() == "red, green or blue" and Registry("x", {"a": 0}).help() == "a"


def test_unknown_and_duplicate_names_are_refused_with_the_names():
    reg = Registry("fusion", {"concat": 1, "gated": 2})
    with pytest.raises(ValueError, match=r"unknown fusion 'sum'; expected one of \['concat', 'gated'\]"):
        reg["sum"]
    assert reg.check("gated") == "gated"
    with pytest.raises(ValueError, match="fusion 'concat' is registered twice"):
        reg.add("concat", 3)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", 3)
    assert reg.remove("gated") == 2 and reg.names == ("concat",)
    with pytest.raises(ValueError, match="unknown fusion 'gated'"):
        reg.remove("gated")
