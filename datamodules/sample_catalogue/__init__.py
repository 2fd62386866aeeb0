"""The built-in sample catalogue: a small generated shop so a fresh clone can train with no data at hand.

Everything is drawn and written here, from a seed: a three-level category tree (4 top-level, 10 second-level,
24 leaf categories), one PIL-drawn JPEG per product whose shape shows its category, a noisy title and a few
noisy attributes. The output is a table-layout catalogue that the sharding helper reads through its
``CatalogueSchema`` (``catalogue.yaml``).

How the category is visible, and what makes it not trivial:

- images: the top-level category picks the shape family (garment, footwear profile, accessory, homeware),
  the second level a sub-variant (tops vs trousers vs dresses, watch vs bag vs glasses...), the leaf its
  proportions and a surface pattern (stripes, dots, checks...). The product's ``colour`` attribute paints
  the body. Noise: position, size and rotation jitter, a tinted background, random clutter shapes, a
  pattern that is sometimes left off, and pixel noise.
- titles: brand + gender + colour + a leaf noun or one of its synonyms; sometimes the noun is replaced by a
  generic word, or a misleading noun from another category is added.
- attributes: ``colour`` matches the image, ``material`` and ``season`` correlate with the category,
  ``gender`` with the branch; every attribute is sometimes missing (an empty CSV cell).

Example:
    >>> from datamodules.sample_catalogue import generate_sample_catalogue
    >>> schema_path = generate_sample_catalogue("work/sample", num_products=600, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from .drawing import draw_product
from .generate import TITLE_MODES, TitleMode, cached_sample_catalogue, generate_sample_catalogue, sample_key
from .taxonomy import LEAVES, SAMPLE_ATTRIBUTES, SAMPLE_COLUMNS, LeafSpec, leaf_pattern, sample_category_paths
from .text import make_attributes, make_noise_title, make_title

__all__ = [
    "LEAVES",
    "SAMPLE_ATTRIBUTES",
    "SAMPLE_COLUMNS",
    "TITLE_MODES",
    "LeafSpec",
    "TitleMode",
    "cached_sample_catalogue",
    "draw_product",
    "generate_sample_catalogue",
    "leaf_pattern",
    "make_attributes",
    "make_noise_title",
    "make_title",
    "sample_category_paths",
    "sample_key",
]
