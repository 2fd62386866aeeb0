"""Category paths: the type, the ``" > "`` display form, and the text a category is encoded from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

CATEGORY_SEPARATOR = " > "

CategoryPath = tuple[str, ...]
"""A category, root first: ``("Apparel", "Topwear", "Tshirts")``."""

CategoryText = Literal["leaf", "path"]
"""The text a category is encoded from: its own name (``leaf``) or its whole path (``path``)."""
CATEGORY_TEXTS: tuple[str, ...] = CategoryText.__args__


def format_path(path: Sequence[str]) -> str:
    """``("Apparel", "Topwear")`` -> ``"Apparel > Topwear"``."""
    return CATEGORY_SEPARATOR.join(path)


def split_path(text: str, separator: str = CATEGORY_SEPARATOR) -> CategoryPath:
    """The levels of a written path, each stripped, empty ones kept (a reader reports them).

    The separator is matched without its surrounding blanks (``" > "`` splits ``"A>B"`` too), unless it is blank.

    >>> split_path(" Apparel>Topwear >  ")
    ('Apparel', 'Topwear', '')
    """
    return tuple(p.strip() for p in text.split(separator.strip() or separator))


def parse_path(text: str, separator: str = CATEGORY_SEPARATOR) -> CategoryPath:
    """``"Apparel > Topwear"`` -> ``("Apparel", "Topwear")``: :func:`split_path` with empty levels dropped.

    >>> parse_path(" Apparel>Topwear >  ")
    ('Apparel', 'Topwear')
    """
    return tuple(p for p in split_path(text, separator) if p)


def category_text_of(path: Sequence[str], style: CategoryText = "leaf") -> str:
    """The text a category is encoded from: its own name (``leaf``) or its full path ``"A > B > C"`` (``path``).

    >>> category_text_of(("Apparel", "Topwear"), "path"), category_text_of(("Apparel", "Topwear"))
    ('Apparel > Topwear', 'Topwear')
    """
    if style == "leaf":
        return path[-1]
    if style == "path":
        return format_path(path)
    raise ValueError(f"unknown category text style {style!r}; expected one of {list(CATEGORY_TEXTS)}")
