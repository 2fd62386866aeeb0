"""Named recipes from Python: build the :class:`ClipIta` network that a ``clipita fit`` YAML describes.

    >>> net = create_model("clip_ita", image_weights="none")  # experiments/clip_ita.yaml's model.net  # doctest: +SKIP

The recipes stay YAML files in ``experiments/`` (``clip_i``, ``clip_ia``, ``clip_ita``, ``clip_ita_plus``, ...); this only
reads their ``model.net`` section, so the network's options are declared once, in :class:`ClipIta`'s signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import ClipIta

RECIPE_DIRS = (Path.cwd, lambda: Path(__file__).resolve().parents[1])  # a checkout's experiments/ as fallback


def find_recipe(name_or_yaml: str | Path) -> Path:
    """The YAML of a recipe: an existing file path, or ``experiments/<name>.yaml`` under the working directory or the
    source checkout this package lives in."""
    path = Path(name_or_yaml)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {str(name_or_yaml)!r} does not exist")
        return path
    tried = []
    for root in RECIPE_DIRS:
        candidate = root() / "experiments" / f"{name_or_yaml}.yaml"
        if candidate.is_file():
            return candidate
        tried.append(str(candidate))
    raise FileNotFoundError(f"no recipe named {str(name_or_yaml)!r}: looked for {', '.join(tried)}")


def recipe_net_config(name_or_yaml: str | Path) -> dict[str, Any]:
    """The ``model.net`` arguments of a recipe (plain ``init_args`` or the ``class_path`` form)."""
    import yaml

    path = find_recipe(name_or_yaml)
    config = yaml.safe_load(path.read_text()) or {}
    net = (config.get("model") or {}).get("net") or {}
    if not isinstance(net, dict):
        raise ValueError(f"{path}: model.net must be a mapping of ClipIta arguments, got {net!r}")
    if "class_path" in net:
        if not str(net["class_path"]).endswith("ClipIta"):
            raise ValueError(f"{path}: model.net.class_path {net['class_path']!r} is not ClipIta")
        net = net.get("init_args") or {}
    return dict(net)


def create_model(name_or_yaml: str | Path = "clip_ita", **overrides: Any) -> ClipIta:
    """Build the (untrained) network of a named recipe, with keyword overrides of :class:`ClipIta` arguments.

    Args:
        name_or_yaml: a recipe name in ``experiments/`` (``clip_ita``) or the path of a ``clipita fit`` YAML.
        overrides: :class:`ClipIta` arguments replacing the recipe's (e.g. ``image_weights="none"``).
    """
    return ClipIta(**{**recipe_net_config(name_or_yaml), **overrides})
