"""The catalogue schema: a YAML file saying how to read a product catalogue of one of three shapes.

- A **table with text**: ``layout: table``, a product table (CSV, JSONL, Parquet) with id, category and title
  (plus optional attribute and description columns) and a folder of images.
- A **table of images only**: the same without a title column. Only id, image and category are required; title,
  attributes and description are optional per schema and per row.
- A **folder tree**: ``layout: folder_tree``, images in folders named after their category path. Product ids are
  the images' paths relative to ``image_root``; file names never become text. Text comes only from an optional
  metadata ``table`` joined on ``id_column`` (the image's relative path, with or without its extension) or from a
  sidecar ``.txt`` beside each image (``sidecar_text: true``). ``split_folders: true`` reads top-level
  ``train/ val/ test/`` folders as the catalogue's own split.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clipita_core.paths import CATEGORY_SEPARATOR
from datamodules.catalogue.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, ImageLimits
from datamodules.catalogue.values import CatalogueError, CatalogueFileNotFoundError, check_regular_file

TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
DEFAULT_TITLE_COLUMN = "title"


@dataclass
class CatalogueSchema:
    """How to read a product catalogue.

    Load one from YAML with :meth:`from_yaml` (relative paths in the file are resolved against the YAML file's
    folder) or build one in Python (relative paths are resolved against the current directory).

    Args:
        layout: ``table`` (a product table plus an image folder) or ``folder_tree`` (images in folders named
            after their category path; id = the image's path relative to ``image_root``; no text unless a
            metadata table or sidecar text files give it).
        table: For ``table``: the product table (``.csv``, ``.jsonl`` or ``.parquet``), required. For
            ``folder_tree``: an optional metadata table joined on ``id_column``.
        image_root: Folder holding the images (for ``folder_tree``: the root of the category tree).
        id_column: Column holding the product id (for a folder-tree metadata table: the image's path relative
            to ``image_root``, with or without its extension).
        image_column: Column holding each image's path relative to ``image_root``; ``None`` to derive the path
            from the id with ``image_pattern``.
        image_pattern: Image file name relative to ``image_root`` when ``image_column`` is ``None``;
            ``{id}`` is replaced by the product id.
        title_column: Column holding the product title. The default, ``title``, is used when the table has such
            a column and otherwise means "no titles"; any other name must be a column of the table; ``null``
            ignores titles. A row with an empty title is kept (it has no title).
        attribute_columns: Columns used as product attributes (name = column name); empty values are absent.
        description_column: Optional column of free text about the product (stored; checked for leaked labels).
        category_columns: Category level columns, root first (e.g. ``[masterCategory, subCategory]``).
            Give either these or ``category_column`` (``table`` only).
        category_column: One column holding the whole category path as text, e.g. ``"A > B > C"``.
        category_separator: Separator of the levels in ``category_column``.
        split_folders: ``folder_tree`` only: the top-level folders ``train``, ``val`` and ``test`` are the
            catalogue's own split (category path = the folders below them); sharding keeps that split.
        sidecar_text: ``folder_tree`` only: an image ``x.jpg`` may have a ``x.txt`` beside it holding its title
            (first line) and description (the rest).
        name: Name of the catalogue (shown in summaries and the manifest).
        allow_outside_root: Read image paths that leave ``image_root`` (``..``, absolute paths, symlinks pointing
            out). Off by default: a catalogue's paths are text anyone may have written, and reading
            ``../../home/me/.ssh/id_rsa.png`` or ``/dev/zero`` because a row says so is never what a user wants;
            such rows are skipped as ``outside_root``. Turn it on for a table whose paths are absolute on purpose.
            Only regular files are ever read, whatever this says.
        max_image_bytes: Largest image file read, in bytes (larger: skipped as ``image_too_large``). The default,
            50 MB, is about 10x a full-resolution 24-megapixel camera JPEG and 100x a typical product photo, so
            real catalogues never meet it, while one row cannot make the reader (and each of its workers) hold
            gigabytes.
        max_image_pixels: Largest image decoded, in pixels (width x height, read from the file's header before any
            pixel is decoded; larger: ``image_too_large``). The default, 50 megapixels (e.g. 8660 x 5773), is above
            every phone and most DSLR cameras and decodes to 150 MB of RGB; a 97 KB PNG claiming 10,000 x 10,000
            (a "decompression bomb", 300 MB decoded) is refused. PIL's own limit (about 179 megapixels) bounds a
            larger setting.
    """

    layout: Literal["table", "folder_tree"] = "table"
    table: str | None = None
    image_root: str = "images"
    id_column: str = "id"
    image_column: str | None = None
    image_pattern: str = "{id}.jpg"
    title_column: str | None = DEFAULT_TITLE_COLUMN
    attribute_columns: list[str] = field(default_factory=list)
    description_column: str | None = None
    category_columns: list[str] = field(default_factory=list)
    category_column: str | None = None
    category_separator: str = CATEGORY_SEPARATOR
    split_folders: bool = False
    sidecar_text: bool = False
    name: str = "catalogue"
    allow_outside_root: bool = False
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:  # noqa: C901 - one check per field
        if self.layout not in ("table", "folder_tree"):
            raise CatalogueError(
                f"unknown catalogue layout {self.layout!r}; expected 'table' or 'folder_tree'"
            )
        for key in ("split_folders", "sidecar_text", "allow_outside_root"):
            if not isinstance(getattr(self, key), bool):
                raise CatalogueError(f"`{key}` must be true or false, got {getattr(self, key)!r}")
        for key in ("max_image_bytes", "max_image_pixels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CatalogueError(f"`{key}` must be a positive whole number, got {value!r}")
        for key in ("id_column", "image_pattern", "category_separator", "name"):
            if not isinstance(getattr(self, key), str):
                raise CatalogueError(f"`{key}` must be text, got {getattr(self, key)!r}")
        for key in ("table", "image_column", "title_column", "description_column", "category_column"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise CatalogueError(f"`{key}` must be text or null, got {value!r}")
        for key in ("attribute_columns", "category_columns"):
            value = getattr(self, key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise CatalogueError(f"`{key}` must be a list of column names, got {value!r}")
            setattr(self, key, list(value))
        if not isinstance(self.image_root, str):
            raise CatalogueError(f"`image_root` must be a folder path, got {self.image_root!r}")
        self.image_root = os.path.abspath(os.path.expanduser(self.image_root))
        if self.title_column == "":
            self.title_column = None
        if self.table is not None:
            self.table = os.path.abspath(os.path.expanduser(self.table))
            if Path(self.table).suffix.lower() not in TABLE_SUFFIXES:
                raise CatalogueError(
                    f"table {self.table!r} has an unsupported extension; expected one of {', '.join(TABLE_SUFFIXES)}"
                )
        if self.layout == "folder_tree":
            return
        if self.split_folders or self.sidecar_text:
            raise CatalogueError("`split_folders` and `sidecar_text` apply to `layout: folder_tree` only")
        if not self.table:
            raise CatalogueError(
                "a 'table' catalogue needs `table`: the path of a .csv, .jsonl or .parquet file"
            )
        if bool(self.category_columns) == bool(self.category_column):
            raise CatalogueError(
                "give exactly one of `category_columns` (level columns, root first) or `category_column` "
                "(one column holding a path like 'A > B > C')"
            )
        if self.category_column is not None and not self.category_separator:
            raise CatalogueError("`category_separator` must not be empty")
        if "{id}" not in self.image_pattern and self.image_column is None:
            raise CatalogueError(f"image_pattern {self.image_pattern!r} must contain '{{id}}'")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> CatalogueSchema:
        """Read a schema from a YAML file; ``table`` and ``image_root`` are relative to the file's folder.

        Args:
            path: The YAML file.

        Raises:
            CatalogueFileNotFoundError: The file does not exist.
            CatalogueError: The file is not a YAML mapping, or has unknown or invalid keys.
        """
        path = Path(path)
        check_regular_file(str(path), "catalogue schema")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CatalogueFileNotFoundError(f"catalogue schema {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogueError(f"cannot read catalogue schema {str(path)!r}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise CatalogueError(f"catalogue schema {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise CatalogueError(f"catalogue schema {str(path)!r} must be a YAML mapping of schema fields")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise CatalogueError(
                f"catalogue schema {str(path)!r} has unknown keys {unknown}; known keys: {sorted(known)}"
            )
        base = path.resolve().parent
        for key in ("table", "image_root"):
            if isinstance(data.get(key), str):
                data[key] = str(base / os.path.expanduser(data[key]))
        data.setdefault("image_root", str(base))
        data.setdefault("name", path.stem)
        if data.get("name") is not None and not isinstance(data["name"], str):
            data["name"] = str(data["name"])
        try:
            return cls(**data)
        except CatalogueError as exc:
            raise type(exc)(f"catalogue schema {str(path)!r}: {exc}") from None
        except TypeError as exc:
            raise CatalogueError(f"catalogue schema {str(path)!r}: {exc}") from exc

    def image_limits(self) -> ImageLimits:
        """Where images may lie (``image_root`` with symlinks resolved, unless ``allow_outside_root``) and how big
        they may be."""
        root = None if self.allow_outside_root else os.path.realpath(self.image_root)
        return ImageLimits(root, self.max_image_bytes, self.max_image_pixels)

    def to_dict(self) -> dict[str, Any]:
        """The schema as plain JSON-able data (paths absolute)."""
        return asdict(self)

    def level_names(self, depth: int) -> list[str]:
        """Names of the category levels: the level columns, or ``level_1 ... level_<depth>``."""
        if self.category_columns and self.layout == "table":
            return list(self.category_columns)
        return [f"level_{d}" for d in range(1, depth + 1)]
