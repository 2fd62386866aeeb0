"""A model that needs a product modality the whole catalogue lacks is refused, or built without it, before anything
is encoded.

Per-product gaps (a product without a title in a catalogue that has titles) go through the fusion's missing-modality
path; a modality *no* product has would train a tower on nothing, so ``clipita fit`` / ``validate`` / ``test`` /
``predict`` (and the leaderboard's and sweep's fits) stop at start with one line naming the model, the modality,
the catalogue and the configs that fit it, e.g.::

    CLIP-ITA needs titles; catalogue 'shop' has none: use experiments/clip_i.yaml or clip_ia.yaml

A network built for whatever the catalogue has (``model.net.adapt_modalities: true``, the adaptive recipe) is not
refused: it is rebuilt without the text modalities the catalogue lacks (:func:`adapted_config`: the title match
and the zero-shot mix go with the titles, BM25 with the last text), with one logged line::

    catalogue 'tree' has no titles or attributes: the model leaves them out
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

# modality -> how a message names it
NOUNS = {"title": "titles", "attributes": "attributes", "description": "descriptions"}
# (model name, modalities, its experiment config), smallest first: the suggestions
KNOWN_MODELS: tuple[tuple[str, frozenset[str], str], ...] = (
    ("CLIP-I", frozenset({"image"}), "clip_i.yaml"),
    ("CLIP-IA", frozenset({"image", "attributes"}), "clip_ia.yaml"),
    ("CLIP-ITA", frozenset({"image", "title", "attributes"}), "clip_ita.yaml"),
    ("the title-only model", frozenset({"title"}), "title_only.yaml"),
)


class MissingModalityError(ValueError):
    """The model reads a product modality that no product of the catalogue has (``clipita`` prints one line)."""


def required_modalities(net: Any) -> list[str]:
    """The product text modalities a network reads: its fused text modalities, plus ``title`` when it mixes in or
    routes through the frozen title embedding (``zero_shot_weight > 0``, ``route_novel_categories``)."""
    modalities = list(getattr(net, "modalities", []))
    needed = [m for m in modalities if m != "image"]
    if "title" not in needed and (
        getattr(net, "zero_shot_weight", 0) or getattr(net, "route_novel_categories", False)
    ):
        needed.insert(0, "title")
    return needed


def model_name(modalities: Iterable[str]) -> str:
    """``CLIP-I``, ``CLIP-IA``, ``CLIP-ITA``... for a modality set (else ``the [image, ...] model``)."""
    key = frozenset(modalities)
    for name, known, _ in KNOWN_MODELS:
        if known == key:
            return name
    return f"the {sorted(key)} model"


def missing_modality_message(
    net: Any, present: Iterable[str], catalogue: str, optional: Iterable[str] = ()
) -> str | None:
    """The one-line refusal, or None when the catalogue has every modality the network reads (``optional`` ones
    aside)."""
    present = set(present) | set(optional)
    missing = [m for m in required_modalities(net) if m not in present]
    if not missing:
        return None
    modalities = list(getattr(net, "modalities", []))
    name = model_name(modalities)
    what = " and ".join(NOUNS.get(m, m) for m in missing)
    why = ""
    if "title" in missing and "title" not in modalities:
        why = " (zero_shot_weight / route_novel_categories read the title)"
    usable = [
        config for _, known, config in KNOWN_MODELS if known <= present | {"image"} and "image" in known
    ]
    use = f"experiments/{usable[0]}" + "".join(f" or {c}" for c in usable[1:]) if usable else "another model"
    return f"{name}{why} needs {what}; catalogue {catalogue!r} has none: use {use}"


def adapted_config(config: dict[str, Any], present: Iterable[str]) -> tuple[dict[str, Any], list[str]] | None:
    """An ``adapt_modalities`` network's config rebuilt for a catalogue whose products have only ``present``
    modalities, and the text modalities it leaves out; None when it leaves nothing out, or when nothing would be
    left to fuse (then the model is refused as any other).

    Without titles the title match (``route_novel_categories``) and the zero-shot mix (``zero_shot_weight``) go
    too; without titles and attributes the BM25 signal (``lexical_signal``) goes. The scorer then chooses no weight
    for a signal that is gone, and test, index and search score without it.
    """
    present = set(present)
    modalities = list(config.get("modalities", []))
    reads_title = bool(config.get("zero_shot_weight") or config.get("route_novel_categories"))
    read = [m for m in NOUNS if m in modalities or (m == "title" and reads_title)]
    left_out = [m for m in read if m not in present]
    kept = [m for m in modalities if m in present]
    if not left_out or not kept:
        return None
    out = {**config, "modalities": kept}
    if "title" not in present:
        out.update(route_novel_categories=False, zero_shot_weight=0.0)
    if not present & {"title", "attributes"}:
        out["lexical_signal"] = False
    return out, left_out


def adapt_to_catalogue(model: Any, datamodule: Any) -> bool:
    """Rebuild ``model.net`` (an ``adapt_modalities`` network) for the modalities ``datamodule``'s catalogue has
    (:func:`adapted_config`), hand the new one to the DataModule as its encoders, and log one line; False when
    there is nothing to leave out (or nothing would be left: the caller refuses)."""
    from lightning_modules.model import ClipIta

    adapted = adapted_config(model.net.config, datamodule.modalities_present)
    if adapted is None:
        return False
    config, left_out = adapted
    net = ClipIta(**config)
    model.use_network(net)
    datamodule.encoders = net  # the frozen towers and the lexical tokenizer the features are encoded with
    what = " or ".join(NOUNS[m] for m in left_out)
    rank_zero_info(f"catalogue {datamodule.catalogue_name!r} has no {what}: the model leaves them out")
    return True


def check_modalities(model: Any, datamodule: Any, wait: bool | None = None) -> None:
    """Raise :class:`MissingModalityError` when the network reads a modality ``datamodule``'s catalogue lacks.

    A module whose network has ``adapt_modalities`` (the adaptive recipe) is not refused: its network is rebuilt
    without the modalities the catalogue lacks (:func:`adapt_to_catalogue`). Otherwise a module that chooses its
    scorer from validation evidence (``choose_scorer``) treats titles as optional: with none in the catalogue its
    choice falls back to the trained towers, so it is not refused.

    The DataModule shards the catalogue if needed and reads its manifest (no image is encoded); a DataModule
    without ``read_catalogue`` / ``modalities_present`` (e.g. a test's synthetic one) is not checked.

    Args:
        model: the LightningModule (its ``.net`` and ``hparams``) or the network itself (``.modalities``,
            ``.zero_shot_weight``, ``.route_novel_categories``).
        datamodule: a :class:`~datamodules.catalogue_datamodule.CatalogueDataModule`.
        wait: passed to ``read_catalogue`` (True on ranks other than 0: wait for rank 0's shards).
    """
    net = getattr(model, "net", model)
    hparams = getattr(model, "hparams", None) if net is not model else None
    optional = ("title",) if hparams is not None and hparams.get("choose_scorer", False) else ()
    if not hasattr(datamodule, "read_catalogue") or not required_modalities(net):
        return
    datamodule.read_catalogue(wait=wait)
    if getattr(net, "adapt_modalities", False) and hasattr(model, "use_network"):
        if adapt_to_catalogue(model, datamodule):
            return
    present = datamodule.modalities_present
    message = missing_modality_message(net, present, datamodule.catalogue_name, optional)
    if message:
        raise MissingModalityError(message)
