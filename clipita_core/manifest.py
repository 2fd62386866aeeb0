"""``manifest.json``, typed: what a shard folder holds (``clipita shard`` writes it; ARCHITECTURE.md has the format).

:class:`Manifest` is a read-only typed view over the JSON object: readers use its accessors (``manifest.count("train")``,
``manifest.tree_paths``, ``manifest.shard_urls(folder, "test")``), never string keys: it is not a ``Mapping``.
:meth:`Manifest.to_dict` gives the object back exactly as read or built (same keys, same order), so
:meth:`Manifest.write` writes the same bytes the writer always wrote.

One policy for old versions: every version up to :data:`MANIFEST_VERSION` is read, keys added after a version was
first written read as their documented default (e.g. ``modalities_present`` from ``attribute_names``); a newer version is
refused with one line naming the file. Checking the shard files on disk against the manifest is
``datamodules.manifest.load_manifest``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipita_core.paths import parse_path
from clipita_core.vocabulary import SPLITS

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
REQUIRED_KEYS = ("version", "content_hash", "input_rows", "sharded", "skipped", "tree", "splits")


class ManifestError(ValueError):
    """A shard folder's manifest is missing or invalid, or does not match the shard files on disk."""


@dataclass(frozen=True)
class ShardFile:
    """One shard file as written: its record count, size in bytes and sha256 (``None`` where an old manifest lacks
    one)."""

    name: str
    count: int | None
    bytes: int | None
    sha256: str | None


@dataclass(frozen=True)
class SplitInfo:
    """One split of the manifest: product count, shard file names in order, and per-category counts."""

    name: str
    count: int
    shards: tuple[str, ...]
    shard_files: Mapping[str, ShardFile]
    per_category: Mapping[str, int]
    category_counts: tuple[tuple[tuple[str, ...], int], ...] | None  # ``None`` in manifests written before it

    @classmethod
    def from_dict(cls, name: str, info: Mapping[str, Any]) -> SplitInfo:
        files = info.get("shard_files") or {}
        return cls(
            name=name,
            count=int(info["count"]),
            shards=tuple(info["shards"]),
            shard_files={
                shard: ShardFile(shard, entry.get("count"), entry.get("bytes"), entry.get("sha256"))
                for shard, entry in files.items()
                if isinstance(entry, Mapping)
            },
            per_category=dict(info.get("per_category") or {}),
            category_counts=(
                tuple((tuple(path), int(n)) for path, n in info["category_counts"])
                if "category_counts" in info
                else None
            ),
        )

    @property
    def category_paths(self) -> list[tuple[str, ...]]:
        """The category paths that have a product in this split (from ``category_counts``; manifests written
        before it existed give them as ``per_category``'s text, parsed back)."""
        if self.category_counts is not None:  # the paths themselves (a level name may contain " > ")
            return [path for path, _ in self.category_counts]
        return [parse_path(path) for path in self.per_category]


@dataclass(frozen=True, eq=False)
class Manifest:
    """The typed, read-only ``manifest.json``. Build it with :meth:`from_dict` or :meth:`read`, never by hand."""

    _data: dict[str, Any]

    # -- construction and serialisation -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "manifest") -> Manifest:
        """Check ``data`` (required keys, version policy, one entry per split) and wrap a private copy of it.

        Raises:
            ManifestError: One line naming ``source`` and what is wrong.
        """
        if not isinstance(data, Mapping):
            raise ManifestError(f"{source} must hold a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ManifestError(f"{source} lacks required keys {missing}")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ManifestError(
                f"{source} has version {version!r}; expected an integer from 1 to {MANIFEST_VERSION}"
            )
        if version > MANIFEST_VERSION:
            raise ManifestError(
                f"{source} has version {version}, newer than this clipita reads ({MANIFEST_VERSION}): upgrade clipita"
            )
        splits = data["splits"]
        if not isinstance(splits, Mapping) or any(s not in splits for s in SPLITS):
            raise ManifestError(f"{source}: 'splits' must have entries {list(SPLITS)}")
        for split in SPLITS:
            info = splits[split]
            for key in ("count", "shards", "shard_files"):
                if not isinstance(info, Mapping) or key not in info:
                    raise ManifestError(f"{source}: split {split!r} lacks {key!r}")
        return cls(copy.deepcopy(dict(data)))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read and check ``path`` (a ``manifest.json``).

        Raises:
            ManifestError: The file is missing, unreadable, not JSON, or fails :meth:`from_dict`; the message names it.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(
                f"no {path.name} in {str(path.parent)!r}: run `clipita shard` first"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read {str(path)!r}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{str(path)!r} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=repr(str(path)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as read or built (a copy; keys in their original order)."""
        return copy.deepcopy(self._data)

    def to_json(self) -> str:
        """The file text :meth:`write` writes (the format ``clipita shard`` has always written)."""
        return json.dumps(self._data, ensure_ascii=False, indent=1) + "\n"

    def write(self, path: str | Path) -> None:
        """Write the manifest to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def __eq__(self, other: object) -> bool:
        """Two manifests are equal when their JSON objects are."""
        return isinstance(other, Manifest) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    # -- typed accessors -------------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self._data["version"])

    @property
    def created_by(self) -> str | None:
        """The command that wrote the manifest (``clipita shard``)."""
        return self._data.get("created_by")

    @property
    def content_hash(self) -> str:
        """sha256 over every sharded product (id, record and image hash) in shard order."""
        return str(self._data["content_hash"])

    @property
    def seed(self) -> int | None:
        return self._data.get("seed")

    @property
    def catalogue_name(self) -> str | None:
        """The schema's ``name`` (``None`` when the manifest records none)."""
        return (self._data.get("schema") or {}).get("name") or None

    @property
    def schema(self) -> dict[str, Any]:
        return dict(self._data.get("schema") or {})

    @property
    def fractions(self) -> dict[str, float]:
        """The split fractions asked for (``val``, ``test``, ``unseen``, ``pseudo_novel``; ``{}`` when not recorded)."""
        return dict(self._data.get("fractions") or {})

    @property
    def split_source(self) -> str:
        """``drawn`` (by seed) or ``folders`` (the catalogue's own train/val/test folders)."""
        return str(self._data.get("split_source", "drawn"))

    @property
    def moved_to_test(self) -> int:
        """Val/train products of unseen leaves moved to test (folder splits; 0 when not recorded)."""
        return int(self._data.get("moved_to_test", 0))

    @property
    def shard_size(self) -> int | None:
        return self._data.get("shard_size")

    @property
    def input_rows(self) -> int:
        return int(self._data["input_rows"])

    @property
    def sharded(self) -> int:
        return int(self._data["sharded"])

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """The rows not sharded: ``row``, ``id``, ``reason``, ``kinds`` each."""
        return copy.deepcopy(self._data["skipped"])

    @property
    def skipped_by_kind(self) -> dict[str, int]:
        return dict(self._data.get("skipped_by_kind") or {})

    @property
    def tree_levels(self) -> list[str]:
        return list((self._data["tree"] or {}).get("levels") or [])

    @property
    def tree_paths(self) -> list[list[str]]:
        """The category table (``CategoryTree.from_json`` input); its order is the category ids'."""
        return copy.deepcopy(list((self._data["tree"] or {}).get("paths") or []))

    @property
    def unseen_categories(self) -> list[tuple[str, ...]]:
        """Leaf paths held out of training by the split (test only)."""
        return [tuple(p) for p in self._data.get("unseen_categories", [])]

    @property
    def pseudo_novel_categories(self) -> list[tuple[str, ...]]:
        """Leaf paths held out of training for validation (``[]`` when none or not recorded)."""
        return [tuple(p) for p in self._data.get("pseudo_novel_categories", [])]

    @property
    def splits(self) -> dict[str, SplitInfo]:
        """Every split, by name, in the manifest's order."""
        return {name: SplitInfo.from_dict(name, info) for name, info in self._data["splits"].items()}

    def split(self, name: str) -> SplitInfo:
        """One split's info.

        Raises:
            ValueError: ``name`` is not a split of the manifest.
        """
        if name not in self._data["splits"]:
            raise ValueError(f"unknown split {name!r}; the manifest has {sorted(self._data['splits'])}")
        return SplitInfo.from_dict(name, self._data["splits"][name])

    def count(self, split: str) -> int:
        """Products in ``split``."""
        return self.split(split).count

    def shard_urls(self, shard_dir: str | Path, split: str) -> list[str]:
        """Paths of the shards of ``split`` in ``shard_dir`` (empty when the split has no products)."""
        return [str(Path(shard_dir) / name) for name in self.split(split).shards]

    @property
    def attribute_names(self) -> list[str]:
        """The catalogue's attribute columns, in order (``[]`` when none)."""
        return list(self._data.get("attribute_names", []))

    @property
    def modalities(self) -> dict[str, dict[str, int]]:
        """Per modality, ``present`` and ``missing`` product counts (``{}`` in manifests written before them)."""
        return copy.deepcopy(dict(self._data.get("modalities") or {}))

    @property
    def modalities_present(self) -> list[str]:
        """The modalities at least one sharded product has (``image`` always; ``title``, ``attributes``,
        ``description`` when some product has one). Manifests written before the count existed report ``image``,
        ``title`` and ``attributes`` (every product then had a title)."""
        if "modalities_present" in self._data:
            return list(self._data["modalities_present"])
        names = ["image", "title"]
        if self._data.get("attribute_names"):
            names.append("attributes")
        return names

    @property
    def leakage(self) -> dict[str, Any]:
        """The leakage guard's report (``{}`` when not recorded)."""
        return copy.deepcopy(dict(self._data.get("leakage") or {}))

    @property
    def reader(self) -> dict[str, Any]:
        """The catalogue reader's statistics (``{}`` when not recorded)."""
        return copy.deepcopy(dict(self._data.get("reader") or {}))
