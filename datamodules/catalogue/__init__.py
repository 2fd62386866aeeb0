"""A product catalogue as users bring it: its schema (a YAML file) and a reader that checks every record.

Three shapes are understood (see :mod:`datamodules.catalogue.schema`): a table with text, a table of images only,
and a folder tree (with an optional metadata table). :func:`read_catalogue` yields one :class:`RawRecord` per
input row and attaches the problems it finds to the record instead of raising, so the shard writer can report
every row it leaves out and why. Nothing outside the catalogue is read on a row's say-so: image paths stay inside
the image root, only regular files are read, images are capped in bytes and pixels
(:mod:`datamodules.catalogue.images`), and control characters follow one rule in every format
(:mod:`datamodules.catalogue.values`).
"""

from __future__ import annotations

from datamodules.catalogue.folder_tree import SPLIT_FOLDERS
from datamodules.catalogue.images import IMAGE_SUFFIXES, JPEG_FORMATS, ImageLimits, check_image, jpeg_bytes
from datamodules.catalogue.reader import read_catalogue
from datamodules.catalogue.schema import TABLE_SUFFIXES, CatalogueSchema
from datamodules.catalogue.values import (
    CatalogueError,
    CatalogueFileNotFoundError,
    Problem,
    ProblemKind,
    RawRecord,
    printable,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "JPEG_FORMATS",
    "SPLIT_FOLDERS",
    "TABLE_SUFFIXES",
    "CatalogueError",
    "CatalogueFileNotFoundError",
    "CatalogueSchema",
    "ImageLimits",
    "Problem",
    "ProblemKind",
    "RawRecord",
    "check_image",
    "jpeg_bytes",
    "printable",
    "read_catalogue",
]
