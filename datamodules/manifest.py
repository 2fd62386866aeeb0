"""``manifest.json``: what a shard folder holds, read back and checked against the shard files on disk."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from clipita_core.vocabulary import SPLITS
from datamodules.leakage import describe_leakage

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SHARD_NAME = re.compile(r"^(train|val|test)-\d{6}\.tar$")
_REQUIRED_KEYS = ("version", "content_hash", "input_rows", "sharded", "skipped", "tree", "splits")


class ManifestError(ValueError):
    """A shard folder's manifest is missing or invalid, or does not match the shard files on disk."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(shard_dir: str, check_hashes: bool = True) -> dict[str, Any]:
    """Read ``manifest.json`` from ``shard_dir`` and check it against the shard files on disk.

    Args:
        shard_dir: Folder written by :func:`shard_catalogue`.
        check_hashes: Also recompute each shard's sha256 (sizes are always checked).

    Raises:
        ManifestError: The manifest is missing, is not valid JSON, lacks required keys, or a shard it lists is
            missing or differs in size or sha256 from what was written; the message names the file.
    """
    folder = Path(shard_dir)
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {str(folder)!r}: run `clipita shard` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {str(path)!r}: {exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{str(path)!r} must hold a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{str(path)!r} lacks required keys {missing}")
    if manifest["version"] != MANIFEST_VERSION:
        raise ManifestError(f"{str(path)!r} has version {manifest['version']!r}; expected {MANIFEST_VERSION}")
    splits = manifest["splits"]
    if not isinstance(splits, dict) or any(s not in splits for s in SPLITS):
        raise ManifestError(f"{str(path)!r}: 'splits' must have entries {list(SPLITS)}")
    for split in SPLITS:
        info = splits[split]
        try:
            names, files = info["shards"], info["shard_files"]
        except (TypeError, KeyError) as exc:
            raise ManifestError(f"{str(path)!r}: split {split!r} lacks {exc}") from None
        for name in names:
            shard = folder / name
            expected = files.get(name) if isinstance(files, dict) else None
            if not isinstance(expected, dict) or "bytes" not in expected or "sha256" not in expected:
                raise ManifestError(f"{str(path)!r} records no size/sha256 for shard {name!r}")
            if not shard.is_file():
                raise ManifestError(f"shard {str(shard)!r} listed in {MANIFEST_NAME} is missing")
            size = shard.stat().st_size
            if size != expected["bytes"]:
                raise ManifestError(
                    f"shard {str(shard)!r} has {size:,} bytes; {MANIFEST_NAME} recorded {expected['bytes']:,}"
                )
            if check_hashes and sha256_file(shard) != expected["sha256"]:
                raise ManifestError(
                    f"shard {str(shard)!r} does not match the sha256 recorded in {MANIFEST_NAME}"
                )
    return manifest


def shard_urls(manifest: dict[str, Any], shard_dir: str, split: str) -> list[str]:
    """Paths of the shards of ``split`` (empty when the split has no products).

    Args:
        manifest: From :func:`load_manifest`.
        shard_dir: The folder holding the shards.
        split: ``train``, ``val`` or ``test``.
    """
    if split not in manifest["splits"]:
        raise ValueError(f"unknown split {split!r}; the manifest has {sorted(manifest['splits'])}")
    return [str(Path(shard_dir) / name) for name in manifest["splits"][split]["shards"]]


def modalities_present(manifest: dict[str, Any]) -> list[str]:
    """The modalities at least one sharded product has (``image`` always; ``title``, ``attributes``,
    ``description`` when some product has one). Manifests written before the count existed report
    ``image``, ``title`` and ``attributes`` (every product then had a title)."""
    if "modalities_present" in manifest:
        return list(manifest["modalities_present"])
    names = ["image", "title"]
    if manifest.get("attribute_names"):
        names.append("attributes")
    return names


def split_mode(manifest: dict[str, Any]) -> str:
    """What the split did, in words (:mod:`datamodules.splits`): drawn, or the catalogue's own folders, and where
    the unseen leaves went (test only, in every mode, so no choice made on validation sees them)."""
    unseen = len(manifest["unseen_categories"])
    if manifest.get("split_source") == "folders":
        moved = manifest.get("moved_to_test", 0)
        return (
            f"split as the catalogue's own train/val/test folders; {unseen} leaf categories with no train product "
            f"are unseen and in test only ({moved:,} of their val products moved to test, so validation choices "
            "never see them)"
        )
    fraction = manifest.get("fractions", {}).get("unseen")
    drawn = f" (unseen_fraction {fraction:g})" if fraction is not None else ""
    return f"split drawn by seed {manifest.get('seed', '?')}; {unseen} unseen leaf categories{drawn} are in test only"


def summarize(manifest: dict[str, Any], output_dir: str, seconds: float | None = None) -> str:
    """One paragraph: what was sharded where, per split, and what was skipped by reason."""
    splits = manifest["splits"]
    parts = []
    for split in SPLITS:
        info = splits[split]
        n_shards = len(info["shards"])
        parts.append(f"{split} {info['count']:,} ({n_shards} shard{'s' if n_shards != 1 else ''})")
    text = (
        f"Sharded {manifest['sharded']:,} of {manifest['input_rows']:,} rows of catalogue "
        f"{manifest['schema'].get('name', '?')!r} into {output_dir}: {', '.join(parts)}; "
        f"{split_mode(manifest)}."
    )
    if manifest.get("pseudo_novel_categories"):
        text += (
            f" {len(manifest['pseudo_novel_categories'])} pseudo-novel leaf categories are held out of training "
            "(validation-only)."
        )
    modalities = manifest.get("modalities")
    if modalities:
        lacking = [
            f"{info['missing']:,} lack {name if name != 'attributes' else 'attributes'}"
            for name, info in modalities.items()
            if name != "image" and info["missing"] and (name != "description" or info["present"])
        ]
        if lacking:
            text += f" Of {manifest['sharded']:,} products, {', '.join(lacking)}."
    if manifest.get("leakage"):
        text += " " + describe_leakage(manifest["leakage"])
    if manifest["skipped"]:
        reasons = ", ".join(
            f"{n:,} {kind.replace('_', ' ')}" for kind, n in manifest["skipped_by_kind"].items()
        )
        text += f" Skipped {len(manifest['skipped']):,} rows ({reasons}); see 'skipped' in {MANIFEST_NAME}."
    else:
        text += " No rows skipped."
    if seconds is not None:
        text += f" Took {seconds:.1f} s; content hash {manifest['content_hash'][:12]}."
    return text
