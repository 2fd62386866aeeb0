"""THE shard-record codec: how one product is stored in a WebDataset shard and read back.

Every writer and reader of shard tars goes through this module (the tars themselves are opened only by
:mod:`datamodules.shard_io`), so the layout lives in one place:

- ``__key__``: :func:`shard_key` of the product id, a reversible safe encoding (percent-encoding of the id's
  UTF-8 bytes; every byte outside ``A-Z a-z 0-9 _ -`` becomes ``%XX``). Ids made only of those characters
  (e.g. the fashion catalogue's numbers) are their own key; ``B00.123`` is ``B00%2E123`` and ``SKU/77`` is
  ``SKU%2F77`` (WebDataset splits a member name at its first ``.`` and treats ``/`` as a folder).
  :func:`id_from_key` inverts it. Outputs show the original id, which the record's JSON also holds.
- ``jpg``: the image bytes.
- ``json``: ``{"id", "title", "attributes", "category", "split"}`` plus ``"description"`` when the product has
  one. ``title`` is ``""`` when the product has none; ``category`` is the path as a JSON list of level names,
  root first. Nothing ever parses a ``"A > B"`` display string back into a path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_KEY = re.compile(r"^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$")


class RecordError(ValueError):
    """A shard key or record cannot be decoded; the message names the key or field."""


def shard_key(product_id: str) -> str:
    """The WebDataset ``__key__`` of a product id (any non-empty string; reversible with :func:`id_from_key`).

    Example:
        >>> shard_key("B00.123"), shard_key("SKU/77"), shard_key("15970")
        ('B00%2E123', 'SKU%2F77', '15970')
    """
    if not isinstance(product_id, str) or not product_id:
        raise RecordError(f"a product id must be a non-empty string, got {product_id!r}")
    try:
        data = product_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(f"product id {product_id!r} cannot be encoded as UTF-8: {exc}") from exc
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in data)


def id_from_key(key: str) -> str:
    """The product id a :func:`shard_key` was made from.

    Raises:
        RecordError: ``key`` is not a key :func:`shard_key` can produce.
    """
    if not isinstance(key, str) or not _KEY.match(key):
        raise RecordError(f"{key!r} is not a shard key (percent-encoded UTF-8 of a product id)")
    data = bytearray()
    i = 0
    while i < len(key):
        if key[i] == "%":
            data.append(int(key[i + 1 : i + 3], 16))
            i += 3
        else:
            data.append(ord(key[i]))
            i += 1
    try:
        product_id = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"shard key {key!r} does not decode to UTF-8: {exc}") from exc
    if shard_key(product_id) != key:  # e.g. "%41" for "A": not canonical, so not ours
        raise RecordError(f"{key!r} is not a canonical shard key (expected {shard_key(product_id)!r})")
    return product_id


@dataclass(frozen=True)
class ShardRecord:
    """One product as stored in a shard (without its image bytes).

    Args:
        id: The original product id.
        category: Category path, root first (a tuple of level names; a name may contain any text).
        title: Product title; ``""`` when the product has none.
        attributes: Attribute name -> value (missing values absent).
        split: ``train``, ``val`` or ``test``.
        description: Free text; ``""`` when the product has none.
    """

    id: str
    category: tuple[str, ...]
    title: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    split: str = ""
    description: str = ""

    @property
    def has_title(self) -> bool:
        return bool(self.title)

    @property
    def key(self) -> str:
        return shard_key(self.id)

    def to_json_bytes(self) -> bytes:
        """The record's ``json`` entry (keys sorted, UTF-8, no ASCII escaping)."""
        meta: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "attributes": dict(self.attributes),
            "category": list(self.category),
            "split": self.split,
        }
        if self.description:
            meta["description"] = self.description
        return json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")


def encode_sample(record: ShardRecord, image: bytes) -> dict[str, Any]:
    """The WebDataset sample written for ``record``: ``__key__``, ``jpg`` and ``json``."""
    return {"__key__": record.key, "jpg": image, "json": record.to_json_bytes()}


def decode_json(data: bytes | str | Mapping[str, Any], key: str | None = None) -> ShardRecord:
    """A :class:`ShardRecord` from a record's ``json`` entry (bytes, text or an already parsed dict).

    Args:
        data: The ``json`` entry.
        key: The sample's ``__key__``, used for the id of records written without one and checked otherwise.

    Raises:
        RecordError: The JSON is invalid, the category is not a non-empty list of names, or the id is missing.
    """
    if isinstance(data, Mapping):
        meta = dict(data)
    else:
        try:
            meta = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecordError(f"record {key!r}: invalid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise RecordError(f"record {key!r}: JSON must be an object, got {type(meta).__name__}")
    category = meta.get("category")
    if not isinstance(category, list) or not category or not all(isinstance(p, str) and p for p in category):
        raise RecordError(
            f"record {key!r}: category must be a non-empty JSON list of names, got {category!r}"
        )
    product_id = meta.get("id")
    if product_id is None and key is not None:
        product_id = id_from_key(key)
    if not isinstance(product_id, str) or not product_id:
        raise RecordError(f"record {key!r}: no product id")
    attributes = {
        str(name): str(value)
        for name, value in (meta.get("attributes") or {}).items()
        if value is not None and value != ""
    }
    return ShardRecord(
        id=product_id,
        category=tuple(category),
        title=str(meta.get("title") or ""),
        attributes=attributes,
        split=str(meta.get("split") or ""),
        description=str(meta.get("description") or ""),
    )


def decode_sample(sample: Mapping[str, Any]) -> ShardRecord:
    """The record of a raw WebDataset sample (its ``json`` entry; ``__key__`` for records lacking an id)."""
    if "json" not in sample:
        raise RecordError(f"sample {sample.get('__key__')!r} has no json entry (fields: {sorted(sample)})")
    return decode_json(sample["json"], sample.get("__key__"))


def sample_id(sample: Mapping[str, Any]) -> str:
    """The original product id of a raw sample (from its JSON when present, else decoded from the key)."""
    if "json" in sample:
        return decode_sample(sample).id
    return id_from_key(str(sample["__key__"]))


def category_to_text(path: Sequence[str]) -> str:
    """A category path as one storable string (a JSON list), for arrays that hold strings (feature caches)."""
    return json.dumps(list(path), ensure_ascii=False)


def category_from_text(text: str) -> tuple[str, ...]:
    """Inverse of :func:`category_to_text`."""
    try:
        path = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"stored category {text!r} is not a JSON list of names") from exc
    if not isinstance(path, list) or not path or not all(isinstance(p, str) for p in path):
        raise RecordError(f"stored category {text!r} is not a non-empty JSON list of names")
    return tuple(path)
