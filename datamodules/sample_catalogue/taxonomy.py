"""The sample's category tree and vocabulary: leaves, colours, brands, materials, and the noise rates."""

from __future__ import annotations

from dataclasses import dataclass

from clipita_core.paths import CategoryPath

Point = tuple[float, float]
RGB = tuple[int, int, int]

SAMPLE_COLUMNS: tuple[str, ...] = (
    "id",
    "title",
    "level1",
    "level2",
    "level3",
    "colour",
    "material",
    "gender",
    "season",
)
SAMPLE_ATTRIBUTES: tuple[str, ...] = ("colour", "material", "gender", "season")


@dataclass(frozen=True)
class LeafSpec:
    """What the generator knows about one leaf category.

    Args:
        path: Full category path, root first.
        nouns: The leaf name's synonyms used in titles (the first is the canonical noun).
        materials: Materials typical of the leaf (drawn most of the time).
        genders: Gender values the leaf is sold for (an empty tuple: usually no gender).
        season: A season the leaf leans to, or ``None`` for all-season products.
        shape: Geometry variant inside the second-level family.
    """

    path: CategoryPath
    nouns: tuple[str, ...]
    materials: tuple[str, ...]
    genders: tuple[str, ...]
    season: str | None
    shape: str


_ADULT = ("Men", "Women")
_ALL_AGES = ("Men", "Women", "Boys", "Girls")
_FEMALE = ("Women", "Girls")
_ACCESSORY = ("Men", "Women", "Unisex")

LEAVES: tuple[LeafSpec, ...] = (
    LeafSpec(
        ("Apparel", "Topwear", "Shirts"),
        ("Shirt", "Casual Shirt", "Formal Shirt", "Button-Down Shirt"),
        ("Cotton", "Linen", "Polyester"),
        _ALL_AGES,
        None,
        "long_sleeves_collar",
    ),
    LeafSpec(
        ("Apparel", "Topwear", "T-Shirts"),
        ("T-Shirt", "Tee", "Crew Neck Tee", "Polo T-Shirt"),
        ("Cotton", "Polyester"),
        _ALL_AGES,
        "Summer",
        "short_sleeves",
    ),
    LeafSpec(
        ("Apparel", "Topwear", "Sweaters"),
        ("Sweater", "Pullover", "Jumper", "Cardigan"),
        ("Wool", "Acrylic", "Cotton"),
        _ALL_AGES,
        "Winter",
        "long_sleeves_hem",
    ),
    LeafSpec(
        ("Apparel", "Bottomwear", "Jeans"),
        ("Jeans", "Denim Jeans", "Slim Fit Jeans", "Denims"),
        ("Denim",),
        _ALL_AGES,
        None,
        "long_legs",
    ),
    LeafSpec(
        ("Apparel", "Bottomwear", "Shorts"),
        ("Shorts", "Bermuda Shorts", "Sports Shorts"),
        ("Cotton", "Polyester", "Denim"),
        _ALL_AGES,
        "Summer",
        "short_legs",
    ),
    LeafSpec(
        ("Apparel", "Bottomwear", "Skirts"),
        ("Skirt", "Midi Skirt", "A-Line Skirt", "Pleated Skirt"),
        ("Cotton", "Polyester", "Viscose"),
        _FEMALE,
        None,
        "skirt",
    ),
    LeafSpec(
        ("Apparel", "Dresses", "Maxi Dresses"),
        ("Maxi Dress", "Long Dress", "Floor-Length Dress"),
        ("Viscose", "Chiffon", "Cotton"),
        _FEMALE,
        "Summer",
        "long_dress",
    ),
    LeafSpec(
        ("Apparel", "Dresses", "Shift Dresses"),
        ("Shift Dress", "Sheath Dress", "Tunic Dress"),
        ("Polyester", "Cotton", "Crepe"),
        _FEMALE,
        None,
        "short_dress",
    ),
    LeafSpec(
        ("Footwear", "Shoes", "Sports Shoes"),
        ("Sports Shoes", "Running Shoes", "Running Sneaker", "Training Shoes"),
        ("Mesh", "Synthetic"),
        _ALL_AGES,
        None,
        "sports_shoe",
    ),
    LeafSpec(
        ("Footwear", "Shoes", "Casual Shoes"),
        ("Casual Shoes", "Sneakers", "Loafers", "Canvas Shoes"),
        ("Canvas", "Suede", "Synthetic"),
        _ALL_AGES,
        None,
        "casual_shoe",
    ),
    LeafSpec(
        ("Footwear", "Shoes", "Formal Shoes"),
        ("Formal Shoes", "Oxfords", "Derby Shoes", "Brogues"),
        ("Leather", "Patent Leather"),
        _ADULT,
        None,
        "formal_shoe",
    ),
    LeafSpec(
        ("Footwear", "Sandals", "Flip Flops"),
        ("Flip Flops", "Slippers", "Thong Sandals"),
        ("Rubber", "EVA"),
        _ALL_AGES,
        "Summer",
        "flat_sandal",
    ),
    LeafSpec(
        ("Footwear", "Sandals", "Heeled Sandals"),
        ("Heeled Sandals", "Block Heels", "Stilettos", "Wedges"),
        ("Synthetic", "Leather"),
        ("Women",),
        "Summer",
        "heeled_sandal",
    ),
    LeafSpec(
        ("Accessories", "Watches", "Analog Watches"),
        ("Analog Watch", "Chronograph", "Dial Watch"),
        ("Stainless Steel", "Leather"),
        _ACCESSORY,
        None,
        "analog_watch",
    ),
    LeafSpec(
        ("Accessories", "Watches", "Digital Watches"),
        ("Digital Watch", "Smart Watch", "Sports Watch"),
        ("Silicone", "Plastic"),
        _ACCESSORY,
        None,
        "digital_watch",
    ),
    LeafSpec(
        ("Accessories", "Bags", "Backpacks"),
        ("Backpack", "Rucksack", "Laptop Bag", "School Bag"),
        ("Polyester", "Nylon"),
        _ACCESSORY,
        None,
        "backpack",
    ),
    LeafSpec(
        ("Accessories", "Bags", "Handbags"),
        ("Handbag", "Tote Bag", "Shoulder Bag", "Satchel"),
        ("Leather", "PU", "Canvas"),
        ("Women",),
        None,
        "handbag",
    ),
    LeafSpec(
        ("Accessories", "Bags", "Wallets"),
        ("Wallet", "Card Holder", "Purse", "Billfold"),
        ("Leather", "PU"),
        _ACCESSORY,
        None,
        "wallet",
    ),
    LeafSpec(
        ("Accessories", "Eyewear", "Sunglasses"),
        ("Sunglasses", "Aviators", "Wayfarers", "Shades"),
        ("Polycarbonate", "Metal"),
        _ACCESSORY,
        "Summer",
        "sunglasses",
    ),
    LeafSpec(
        ("Accessories", "Eyewear", "Reading Glasses"),
        ("Reading Glasses", "Spectacles", "Eyeglasses", "Readers"),
        ("Acetate", "Metal"),
        _ACCESSORY,
        None,
        "reading_glasses",
    ),
    LeafSpec(
        ("Home", "Decor", "Candles"),
        ("Candle", "Scented Candle", "Pillar Candle", "Tealight Set"),
        ("Wax", "Soy Wax"),
        (),
        "Winter",
        "candle",
    ),
    LeafSpec(
        ("Home", "Decor", "Vases"),
        ("Vase", "Flower Vase", "Bud Vase"),
        ("Ceramic", "Glass"),
        (),
        None,
        "vase",
    ),
    LeafSpec(
        ("Home", "Kitchen", "Mugs"),
        ("Mug", "Coffee Mug", "Tea Cup"),
        ("Ceramic", "Stoneware"),
        (),
        None,
        "mug",
    ),
    LeafSpec(
        ("Home", "Kitchen", "Bowls"),
        ("Bowl", "Serving Bowl", "Salad Bowl"),
        ("Ceramic", "Melamine", "Glass"),
        (),
        None,
        "bowl",
    ),
)

COLOURS: dict[str, RGB] = {
    "Black": (30, 30, 32),
    "White": (236, 236, 232),
    "Grey": (128, 128, 132),
    "Navy Blue": (28, 40, 96),
    "Blue": (40, 100, 210),
    "Red": (200, 32, 40),
    "Green": (40, 140, 60),
    "Yellow": (236, 200, 40),
    "Pink": (236, 130, 170),
    "Brown": (120, 72, 40),
    "Purple": (120, 50, 150),
    "Orange": (240, 130, 30),
}
_COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {"Navy Blue": ("Navy",), "Grey": ("Gray", "Charcoal")}
_BRANDS: tuple[str, ...] = (
    "Aurora",
    "Northwind",
    "Kestrel",
    "Luma",
    "Tessera",
    "Brio",
    "Solstice",
    "Marlow",
    "Quill",
    "Verde",
    "Halcyon",
    "Orbit",
)
_DESCRIPTORS: tuple[str, ...] = ("Solid", "Printed", "Classic", "Premium", "Slim", "Everyday", "Textured")
_GENERIC_NOUNS: tuple[str, ...] = (
    "Essential",
    "Signature Piece",
    "Everyday Pick",
    "New Arrival",
    "Bestseller",
)
_SEASONS: tuple[str, ...] = ("Spring", "Summer", "Fall", "Winter")
_ALL_MATERIALS: tuple[str, ...] = tuple(sorted({m for leaf in LEAVES for m in leaf.materials}))
_PATTERNS: tuple[str, ...] = ("vstripes", "dots", "hstripes", "checks", "diagonal", "ring")

# Noise rates (probabilities per product).
_P_MISSING = {"colour": 0.05, "material": 0.12, "gender": 0.08, "season": 0.2}
_P_TITLE_GENERIC = 0.12
_P_TITLE_MISLEADING = 0.08
_P_TITLE_NO_COLOUR = 0.1
_P_TYPICAL_MATERIAL = 0.8
_P_TYPICAL_SEASON = 0.7
_P_PLAIN = 0.15


def leaf_pattern(leaf_index: int) -> str:
    """The surface pattern that marks a leaf: siblings (same parent) always get different patterns.

    Args:
        leaf_index: Index into ``LEAVES``.

    Returns:
        One of the pattern names drawn by ``draw_product``.
    """
    parents = list(dict.fromkeys(leaf.path[:-1] for leaf in LEAVES))
    parent = LEAVES[leaf_index].path[:-1]
    position = [leaf.path[:-1] for leaf in LEAVES[:leaf_index]].count(parent)
    return _PATTERNS[(position + 2 * parents.index(parent)) % len(_PATTERNS)]


def sample_category_paths() -> list[CategoryPath]:
    """The leaf paths of the sample tree, in generation order."""
    return [leaf.path for leaf in LEAVES]
