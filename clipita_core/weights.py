"""The scorer's weights: :class:`RetrievalWeights`, the typed form of a checkpoint record's ``retrieval`` dict.

A query's score mixes the retrieval signals (:mod:`lightning_modules.scoring`) with weights chosen on validation
(:mod:`lightning_modules.scorer_choice`, :mod:`lightning_modules.wise_ft`). On disk they are the checkpoint record's
``retrieval`` dict, whose keys are the field names here, written only when set::

    seen_title_weight, novel_title_weight        the title match's weight            in [0, 1]
    seen_image_weight, novel_image_weight        the image-only towers' share        in [0, 1]
    seen_lexical_weight, novel_lexical_weight    the normalised BM25 term's weight   in [0, 1]
    novel_parent_weight, descendant_weight       the tree terms' weights             >= 0
    wise_ft_alpha                                the WiSE-FT mix of the towers       in [0, 1]

Every other key (the choices' evidence: ``scorer_choice``, ``wise_ft``, ...) is kept as it is, opaque, in
:attr:`RetrievalWeights.evidence`.

Versions, one policy: today's record is version 1 and carries no version key; a later format writes
:data:`VERSION_KEY`, and a reader refuses a version newer than its own :data:`VERSION`. A weight missing from a record
(an older record, or a signal never chosen) takes its default (:data:`DEFAULTS`), so every record written so far
reads unchanged, and :meth:`RetrievalWeights.to_dict` writes back exactly the keys it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

VERSION = 1
VERSION_KEY = "retrieval_version"  # absent in version 1 (today's records)
SIDES = ("seen", "novel")
SIGNALS = ("title", "image", "lexical")  # the weights chosen per side
# The record keys, spelled here only (each is also the RetrievalWeights field of the same name, checked below).
SEEN_TITLE_WEIGHT = "seen_title_weight"
NOVEL_TITLE_WEIGHT = "novel_title_weight"
SEEN_IMAGE_WEIGHT = "seen_image_weight"
NOVEL_IMAGE_WEIGHT = "novel_image_weight"
SEEN_LEXICAL_WEIGHT = "seen_lexical_weight"
NOVEL_LEXICAL_WEIGHT = "novel_lexical_weight"
NOVEL_PARENT_WEIGHT = "novel_parent_weight"
DESCENDANT_WEIGHT = "descendant_weight"
WISE_FT_ALPHA = "wise_ft_alpha"
SIGNAL_KEYS = {
    ("seen", "title"): SEEN_TITLE_WEIGHT,
    ("novel", "title"): NOVEL_TITLE_WEIGHT,
    ("seen", "image"): SEEN_IMAGE_WEIGHT,
    ("novel", "image"): NOVEL_IMAGE_WEIGHT,
    ("seen", "lexical"): SEEN_LEXICAL_WEIGHT,
    ("novel", "lexical"): NOVEL_LEXICAL_WEIGHT,
}
DEFAULTS = {
    SEEN_TITLE_WEIGHT: 0.0,  # trained queries by the towers
    NOVEL_TITLE_WEIGHT: 1.0,  # novel ones by the title match
    SEEN_IMAGE_WEIGHT: 0.0,
    NOVEL_IMAGE_WEIGHT: 0.0,
    SEEN_LEXICAL_WEIGHT: 0.0,
    NOVEL_LEXICAL_WEIGHT: 0.0,
    NOVEL_PARENT_WEIGHT: 0.0,
    DESCENDANT_WEIGHT: 0.0,
    WISE_FT_ALPHA: 1.0,  # the fine-tuned towers alone
}
TREE = (NOVEL_PARENT_WEIGHT, DESCENDANT_WEIGHT)  # >= 0; every other weight is in [0, 1]


def weight_key(side: str, signal: str) -> str:
    """The record key (and field name) of a side's signal weight: ``seen_title_weight``, ``novel_image_weight``..."""
    key = SIGNAL_KEYS.get((side, signal))
    if key is None:
        raise ValueError(f"no retrieval weight for side {side!r} and signal {signal!r}")
    return key


@dataclass(frozen=True)
class RetrievalWeights:
    """The scorer's weights; None = not recorded (the default applies, and :meth:`to_dict` leaves the key out)."""

    seen_title_weight: float | None = None
    novel_title_weight: float | None = None
    seen_image_weight: float | None = None
    novel_image_weight: float | None = None
    seen_lexical_weight: float | None = None
    novel_lexical_weight: float | None = None
    novel_parent_weight: float | None = None
    descendant_weight: float | None = None
    wise_ft_alpha: float | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)  # every other record key, opaque

    def __post_init__(self) -> None:
        for name in DEFAULTS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"retrieval {name} must be a number, got {value!r}") from None
            low, high = (0.0, float("inf")) if name in TREE else (0.0, 1.0)
            if not low <= value <= high:
                bound = ">= 0" if name in TREE else "in [0, 1]"
                raise ValueError(f"retrieval {name} must be {bound}, got {value:g}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "evidence", dict(self.evidence))

    @classmethod
    def from_dict(cls, record: Mapping[str, Any] | None) -> RetrievalWeights:
        """The weights of a checkpoint record's ``retrieval`` dict (None or ``{}``: all defaults)."""
        record = dict(record or {})
        version = record.pop(VERSION_KEY, VERSION)
        if version != VERSION:
            raise ValueError(
                f"retrieval record version {version!r} is not readable (this reader knows {VERSION})"
            )
        weights = {k: record.pop(k) for k in DEFAULTS if k in record}
        return cls(**weights, evidence=record)

    def to_dict(self) -> dict[str, Any]:
        """The record: the evidence and each weight that is set, under the keys :meth:`from_dict` reads."""
        weights = {f.name: getattr(self, f.name) for f in fields(self) if f.name in DEFAULTS}
        return {**self.evidence, **{k: v for k, v in weights.items() if v is not None}}

    def merged(self, record: Mapping[str, Any]) -> RetrievalWeights:
        """These weights with a record's keys written over them (a choice of some of the weights)."""
        return RetrievalWeights.from_dict({**self.to_dict(), **record})

    def value(self, key: str) -> float:
        """A weight by its record key, its default when not set."""
        if key not in DEFAULTS:
            raise KeyError(f"no retrieval weight {key!r}")
        value = getattr(self, key)
        return DEFAULTS[key] if value is None else value

    def pair(self, signal: str) -> tuple[float, float]:
        """``(seen, novel)`` weights of a signal (``title``, ``image``, ``lexical``)."""
        return self.value(weight_key("seen", signal)), self.value(weight_key("novel", signal))

    @property
    def taxonomy(self) -> tuple[float, float]:
        """``(novel_parent_weight, descendant_weight)``."""
        return self.value(NOVEL_PARENT_WEIGHT), self.value(DESCENDANT_WEIGHT)

    @property
    def alpha(self) -> float:
        """The WiSE-FT mix (1.0: the fine-tuned towers alone)."""
        return self.value(WISE_FT_ALPHA)

    def with_weights(self, **weights: float | None) -> RetrievalWeights:
        """A copy with some weights replaced (checked like any other)."""
        return replace(self, **weights)


if {f.name for f in fields(RetrievalWeights)} != {*DEFAULTS, "evidence"}:  # the fields are the record keys
    raise ImportError("RetrievalWeights' fields and the retrieval record keys differ")
