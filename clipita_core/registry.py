"""A named registry: one table from a name to its object, from which a family's names, its ``Literal`` type, its
validation message and its help text are all derived, so the family is listed once.

Example:
    >>> COLOURS = Registry("colour", {"red": 1, "blue": 2})
    >>> COLOURS.names, COLOURS["blue"], COLOURS.help()
    (('red', 'blue'), 2, 'red or blue')
    >>> COLOURS["green"]
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'green'; expected one of ['red', 'blue']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one family (fusions, losses, baselines, ...), in registration order.

    Args:
        kind: what one entry is, for messages (``"fusion"`` -> ``unknown fusion 'x'; expected one of [...]``).
        entries: the initial entries.
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, value in (entries or {}).items():
            self.add(name, value)

    def add(self, name: str, value: T) -> T:
        """Register ``value`` under ``name`` (a name registered twice is an error, not a silent replacement)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = value
        return value

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its object (for an entry registered only for a while, e.g. in a test)."""
        return self._entries.pop(self.check(name))

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@FUSIONS.register("mine")`` above a class or function."""
        return lambda value: self.add(name, value)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    @property
    def literal(self) -> Any:
        """``Literal[name, ...]`` of the names registered now. As a postponed annotation (``fusion:
        FUSIONS.literal`` under ``from __future__ import annotations``) it is evaluated when jsonargparse builds a
        parser, so an option follows every entry registered before then, and ``--help`` lists them."""
        return Literal[self.names]

    def check(self, name: Any) -> str:
        """``name`` when registered, else ``ValueError`` with the one message every caller shows."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {list(self.names)}")
        return name

    def help(self) -> str:
        """The names for help text: ``"a, b or c"``."""
        names = self.names
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"

    def __getitem__(self, name: str) -> T:
        return self._entries[self.check(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self.names)})"
