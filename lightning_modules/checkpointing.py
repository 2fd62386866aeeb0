"""The one checkpoint contract: what a clipita checkpoint holds for retrieval, and :func:`load_model` to read it.

A checkpoint is a Lightning ``.ckpt`` whose module is :class:`~lightning_modules.clip_ita_module.ClipItaModule`
(the network sits under ``net``). Two parts of it serve retrieval:

``state_dict``
    ``net.<name>``: the network's parameters and buffers, *less* the frozen pretrained towers
    (``net.image_encoder.*`` / ``net.text_encoder.*`` when not fine-tuned and loaded from named pretrained weights):
    they are rebuilt from their names in ``net_config``. A fine-tuned tower is saved, and saved *whole* even when
    only its top blocks trained (``train_image_blocks`` / ``train_text_layers``): its frozen blocks are kept beside
    the trained ones, so a loaded tower is exactly the trained one whatever its pretrained source does later. A
    network with ``lexical_signal`` keeps its BM25 corpus
    statistics of the training split here too (``net.lexical.doc_freq`` / ``num_docs`` / ``avg_len`` buffers), so
    a loaded model scores BM25 exactly as its test did. Other keys (``loss.*``) belong to training.
``checkpoint["clipita"]``
    ``version``: :data:`VERSION`.
    ``net_config``: ``ClipIta(**net_config)`` rebuilds the network (encoder names and weights, modalities, heads,
    fusion, ``attribute_names``, ``category_text``, ``route_novel_categories``...).
    ``trained_categories``: every category path (a list of names, root first) with a training product: the model's
    trained set; queries outside it are *novel* (see :mod:`lightning_modules.model`).
    ``retrieval``: the scorer's weights, :class:`clipita_core.weights.RetrievalWeights` as a dict
    (``RetrievalWeights.to_dict``; restored into ``net.scorer.weights``, with its one policy for old records): the
    signal weights (``seen_/novel_`` ``title_weight``, ``image_weight``, ``lexical_weight``) and the validation
    evidence they were chosen on (``scorer_choice``; see :mod:`lightning_modules.scorer_choice`), and with fine-tuned
    towers the WiSE-FT mixing coefficient ``wise_ft_alpha`` and its evidence (:mod:`lightning_modules.wise_ft`;
    ``state_dict`` holds the fine-tuned weights, :func:`load_model` mixes them with the pretrained ones).
    ``wise_ft_start`` (:data:`START_KEY`; only a WiSE-FT fit started from ``model.init_from``): the start side of the
    mix for the tensors outside the towers (``{"category_head.0.weight": tensor}``, the heads as loaded from
    ``init_from``); :func:`load_model` mixes them with the trained ones as it mixes the towers. Without it (older
    checkpoints, fits from scratch) only the towers are mixed.
    ``frozen``: the state-dict prefixes left out.
    ``loss``: ``{"class_path", "init_args"}`` of the training loss (for the record; retrieval does not need it).
    ``data``: the DataModule's arguments as plain values (strings, numbers, lists, dicts; Lightning's
    ``datamodule_hyper_parameters`` less private keys and objects), what ``clipita index`` rebuilds the catalogue
    from (:func:`data_options`).

:func:`write_checkpoint` (called by the module's ``on_save_checkpoint``) writes this; :func:`load_model` reads it with
no Lightning Trainer, CLI, loss or metrics; :func:`restore_module_state` is the module's ``on_load_checkpoint`` side.
Checkpoints written before this contract (``model.*`` keys, no ``clipita.version``) are refused with a message.
Every read is ``torch.load(weights_only=True)`` (:func:`read_checkpoint`): tensors and plain values only, so reading
a checkpoint runs no pickled code; a checkpoint holding a pickled object is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from clipita_core.weights import RetrievalWeights

from .model import ClipIta

KEY = "clipita"
VERSION = 2
NET_PREFIX = "net."
START_KEY = "wise_ft_start"


class CheckpointFormatError(ValueError):
    """A file that is not a clipita checkpoint of the current contract."""


def frozen_prefixes(net: ClipIta) -> tuple[str, ...]:
    """State-dict prefixes (within the network) of towers that are frozen *and* rebuildable from pretrained weights.

    A frozen tower with ``image_weights: none`` (random init, tests) cannot be rebuilt from its name, so it is kept.
    """
    prefixes = []
    image = net.image_encoder
    if image is not None and not image.trainable and image.image_weights != "none":
        prefixes.append("image_encoder.")
    if not net.text_encoder.trainable:
        prefixes.append("text_encoder.")
    return tuple(prefixes)


def write_checkpoint(
    checkpoint: dict,
    net: ClipIta,
    prefix: str = NET_PREFIX,
    loss: torch.nn.Module | None = None,
    start: dict[str, torch.Tensor] | None = None,
) -> None:
    """Fill a Lightning checkpoint dict in place: drop the frozen towers' weights and add the ``clipita`` record
    (``start``: WiSE-FT's start side of the non-tower tensors, kept as :data:`START_KEY`)."""
    frozen = tuple(prefix + p for p in frozen_prefixes(net))
    state = checkpoint["state_dict"]
    if frozen:
        for key in [k for k in state if k.startswith(frozen)]:
            del state[key]
    record: dict[str, Any] = {
        "version": VERSION,
        "net_config": net.config,
        "trained_categories": [list(p) for p in net.trained_categories],
        "retrieval": net.scorer.weights.to_dict(),
        "frozen": list(frozen),
    }
    if start:
        record[START_KEY] = {k: v.detach().cpu().clone() for k, v in start.items()}
    data = _plain_options(checkpoint.get("datamodule_hyper_parameters"))
    if data is not None:
        record["data"] = data
    if loss is not None:
        record["loss"] = {
            "class_path": f"{type(loss).__module__}.{type(loss).__qualname__}",
            "init_args": dict(getattr(loss, "config", {})),
        }
    checkpoint[KEY] = record


def _plain(value: Any) -> Any:
    """``value`` as plain data (None for what is not: objects are not kept)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return None


def _plain_options(hparams: Any) -> dict[str, Any] | None:
    """The DataModule arguments of Lightning's ``datamodule_hyper_parameters`` as plain values (private keys and
    objects, e.g. the ``encoders`` network, left out); None when there are none."""
    if not hparams:
        return None
    return {
        str(k): _plain(v)
        for k, v in dict(hparams).items()
        if not str(k).startswith("_") and (v is None or _plain(v) is not None)
    }


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint file's contents, read with ``weights_only=True`` (tensors and plain values only: no pickled code
    runs); a file holding a pickled object is refused with :class:`CheckpointFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointFormatError(
            f"{path}: not a clipita checkpoint of plain values and tensors (a pickled object was refused: {err})"
        ) from None


def data_options(ckpt_path: str | Path) -> dict[str, Any] | None:
    """The DataModule arguments a checkpoint was trained with (its record's ``data``), or None when it records none."""
    record = read_record(read_checkpoint(ckpt_path), str(ckpt_path))
    data = record.get("data")
    return dict(data) if isinstance(data, dict) else None


def read_record(checkpoint: dict, source: str = "checkpoint") -> dict:
    """The ``clipita`` record of a loaded checkpoint dict; a clear error for anything else."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointFormatError(f"{source}: not a Lightning checkpoint (no 'state_dict')")
    record = checkpoint.get(KEY)
    if not isinstance(record, dict) or record.get("version") != VERSION:
        found = record.get("version") if isinstance(record, dict) else None
        raise CheckpointFormatError(
            f"{source}: written by an older clipita (checkpoint format {found or 1}, this clipita reads format "
            f"{VERSION}: the network under 'net.' with its config and trained categories); retrain it with "
            "`clipita fit`"
        )
    return record


def restore_net_metadata(net: ClipIta, record: dict) -> None:
    """Put what the record says about retrieval into a network built from its config."""
    net.attribute_names = list(record["net_config"].get("attribute_names", []))
    net.set_trained_categories(record.get("trained_categories", []))
    net.scorer.weights = RetrievalWeights.from_dict(record.get("retrieval"))


def restore_module_state(checkpoint: dict, net: ClipIta, own_state: dict, prefix: str = NET_PREFIX) -> None:
    """The module's ``on_load_checkpoint``: check the format, put back the frozen towers' weights this module was
    built with (``own_state``: the module's current state dict) so a strict load succeeds, and restore the record
    into ``net``."""
    record = read_record(checkpoint)
    state = checkpoint["state_dict"]
    frozen = tuple(record.get("frozen", ()))
    for key, value in own_state.items():
        if frozen and key.startswith(frozen) and key not in state:
            state[key] = value
    restore_net_metadata(net, record)


def find_last_checkpoint(run_root: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` of a logger's run folders ``<run_root>/version_*/checkpoints/`` (None if none).

    Each run writes its checkpoints into its own versioned folder, so resuming (``clipita fit --ckpt_path last``)
    looks across the versions of that run name for the latest ``last.ckpt``; the resumed run then logs into a new
    version folder.
    """
    found = [p for p in Path(run_root).glob("version_*/checkpoints/last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def tested_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint a fit tests: its ModelCheckpoint's best (the one non-``last`` checkpoint, else the best path
    recorded in ``last.ckpt``), else ``last.ckpt``; None when the folder holds none."""
    directory = Path(folder) / "checkpoints"
    last = directory / "last.ckpt"
    best = sorted(p for p in directory.glob("*.ckpt") if not p.name.startswith("last"))
    if len(best) == 1:
        return best[0]
    if len(best) > 1 and last.is_file():
        for key, state in (read_checkpoint(last).get("callbacks") or {}).items():
            path = Path(str(state.get("best_model_path") or "")) if "ModelCheckpoint" in key else None
            if path is not None and path.name and (directory / path.name).is_file():
                return directory / path.name
    if best:
        return max(best, key=lambda p: p.stat().st_mtime)
    return last if last.is_file() else None


def load_net_state(net: ClipIta, checkpoint: dict, record: dict, source: str) -> None:
    """Load a checkpoint's network weights into ``net`` (built from a matching config): every key must fit, and the
    only ones allowed to be absent are the frozen towers the record names (``net`` already holds them, rebuilt from
    their names)."""
    state = {k[len(NET_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(NET_PREFIX)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    frozen = tuple(p[len(NET_PREFIX) :] for p in record.get("frozen", ()))
    missing = [k for k in missing if not (frozen and k.startswith(frozen))]
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{source}: weights do not fit the recorded network: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def load_model(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> ClipIta:
    """Load the trained :class:`ClipIta` of a ``clipita fit`` checkpoint, ready for retrieval (eval mode).

    Needs no Lightning Trainer, CLI, loss or metrics: the network is rebuilt from its recorded config (frozen
    pretrained towers from their names), its trained weights loaded (fine-tuned towers included), its trained
    category set and retrieval record restored, and a WiSE-FT mixing coefficient in that record applied to the
    fine-tuned towers (:mod:`lightning_modules.wise_ft`: the pretrained side is the tower rebuilt from its name) and,
    when the record keeps :data:`START_KEY`, to the heads too (their start side read from there).

    Example:
        >>> net = load_model("runs/clip_ita_plus/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> queries = net.encode_query_paths([("Footwear", "Shoes", "Sports Shoes")])  # doctest: +SKIP
    """
    from .wise_ft import apply_wise_ft, tower_state

    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path, map_location)
    record = read_record(checkpoint, str(path))
    net = ClipIta(**record["net_config"])
    start = tower_state(net)  # the towers as built from their names: WiSE-FT's pretrained side
    load_net_state(net, checkpoint, record, str(path))
    restore_net_metadata(net, record)
    start.update(_start_heads(record, net, str(path)))
    apply_wise_ft(net, start)
    return net.to(map_location).eval()


def _start_heads(record: dict, net: ClipIta, source: str) -> dict[str, torch.Tensor]:
    """The record's WiSE-FT start side of the non-tower tensors ({} when it has none); keys must fit ``net``."""
    start = record.get(START_KEY) or {}
    own = net.state_dict()
    wrong = [k for k, v in start.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise CheckpointFormatError(f"{source}: {START_KEY} does not fit the recorded network: {wrong[:5]}")
    return dict(start)


# ClipIta arguments a second training stage may change from the checkpoint it starts from (model.init_from)
STAGE_OPTIONS = frozenset(
    {
        "train_image_encoder",
        "train_text_encoder",
        "train_image_blocks",
        "train_text_layers",
        "gradient_checkpointing",
        "image_size",
        "dropout",
        "attribute_names",
    }
)


# what an adapt_modalities network changes when the catalogue lacks a text modality (clipita.modalities)
ADAPTED_OPTIONS = frozenset({"modalities", "route_novel_categories", "zero_shot_weight", "lexical_signal"})


def init_from_checkpoint(
    net: ClipIta, ckpt_path: str | Path, wait_for_adaptation: bool = False
) -> dict | None:
    """Start training ``net`` from the network weights of an earlier run's checkpoint (``model.init_from``: stage 2
    of linear-probe-then-fine-tune starts from stage 1's heads), read by the same loader as :func:`load_model`.

    The two networks must be the same but for :data:`STAGE_OPTIONS` (which towers and blocks train, the image size,
    dropout); a difference elsewhere is refused with the options named. The checkpoint's frozen towers are not in it:
    ``net`` keeps its own, built from the same names. Its trained set and retrieval record are not taken (this run
    sets and chooses its own). Returns the checkpoint's record.

    With ``wait_for_adaptation``, an ``adapt_modalities`` network that differs only as its rebuild for a catalogue
    without some text modality would (:data:`ADAPTED_OPTIONS`, the checkpoint's modalities a subset of its own) is
    left as it is and None returned: the weights go into the rebuilt network (``ClipItaModule.use_network``), and
    if no rebuild comes the difference is refused when the fit sets up.
    """
    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)
    record = read_record(checkpoint, str(path))
    theirs, ours = record["net_config"], net.config
    differ = [
        k for k in sorted(set(theirs) | set(ours)) if k not in STAGE_OPTIONS and theirs.get(k) != ours.get(k)
    ]
    fewer = set(theirs.get("modalities", [])) < set(ours.get("modalities", []))
    if wait_for_adaptation and ours.get("adapt_modalities") and fewer and set(differ) <= ADAPTED_OPTIONS:
        return None
    if differ:
        named = "; ".join(f"{k} ({theirs.get(k)!r} there, {ours.get(k)!r} here)" for k in differ)
        raise ValueError(
            f"model.init_from {path}: its network differs from model.net in {named}; build the same "
            "network (only which towers/blocks train, image_size and dropout may change)"
        )
    load_net_state(net, checkpoint, record, str(path))
    return record
