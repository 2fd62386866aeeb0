"""``manifest.json`` on disk: read back and checked against the shard files, and summarised in words.

The type itself (fields, version policy, reading and writing) is :class:`clipita_core.manifest.Manifest`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from clipita_core.manifest import MANIFEST_NAME, MANIFEST_VERSION, Manifest, ManifestError
from clipita_core.vocabulary import SPLITS
from datamodules.leakage import describe_leakage

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "SHARD_NAME", "Manifest", "ManifestError", "load_manifest"]

SHARD_NAME = re.compile(r"^(train|val|test)-\d{6}\.tar$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(shard_dir: str, check_hashes: bool = True) -> Manifest:
    """Read ``manifest.json`` from ``shard_dir`` and check it against the shard files on disk.

    Args:
        shard_dir: Folder written by :func:`shard_catalogue`.
        check_hashes: Also recompute each shard's sha256 (sizes are always checked).

    Raises:
        ManifestError: The manifest is missing, is not valid JSON, lacks required keys, has a newer version than
            this clipita reads, or a shard it lists is missing or differs in size or sha256 from what was written;
            the message names the file.
    """
    folder = Path(shard_dir)
    path = folder / MANIFEST_NAME
    manifest = Manifest.read(path)
    for split in SPLITS:
        info = manifest.split(split)
        for name in info.shards:
            shard = folder / name
            expected = info.shard_files.get(name)
            if expected is None or expected.bytes is None or expected.sha256 is None:
                raise ManifestError(f"{str(path)!r} records no size/sha256 for shard {name!r}")
            if not shard.is_file():
                raise ManifestError(f"shard {str(shard)!r} listed in {MANIFEST_NAME} is missing")
            size = shard.stat().st_size
            if size != expected.bytes:
                raise ManifestError(
                    f"shard {str(shard)!r} has {size:,} bytes; {MANIFEST_NAME} recorded {expected.bytes:,}"
                )
            if check_hashes and sha256_file(shard) != expected.sha256:
                raise ManifestError(
                    f"shard {str(shard)!r} does not match the sha256 recorded in {MANIFEST_NAME}"
                )
    return manifest


def split_mode(manifest: Manifest) -> str:
    """What the split did, in words (:mod:`datamodules.splits`): drawn, or the catalogue's own folders, and where
    the unseen leaves went (test only, in every mode, so no choice made on validation sees them)."""
    unseen = len(manifest.unseen_categories)
    if manifest.split_source == "folders":
        return (
            f"split as the catalogue's own train/val/test folders; {unseen} leaf categories with no train product "
            f"are unseen and in test only ({manifest.moved_to_test:,} of their val products moved to test, so "
            "validation choices never see them)"
        )
    fraction = manifest.fractions.get("unseen")
    drawn = f" (unseen_fraction {fraction:g})" if fraction is not None else ""
    seed = manifest.seed if manifest.seed is not None else "?"
    return f"split drawn by seed {seed}; {unseen} unseen leaf categories{drawn} are in test only"


def summarize(manifest: Manifest, output_dir: str, seconds: float | None = None) -> str:
    """One paragraph: what was sharded where, per split, and what was skipped by reason."""
    parts = []
    for split in SPLITS:
        info = manifest.split(split)
        n_shards = len(info.shards)
        parts.append(f"{split} {info.count:,} ({n_shards} shard{'s' if n_shards != 1 else ''})")
    text = (
        f"Sharded {manifest.sharded:,} of {manifest.input_rows:,} rows of catalogue "
        f"{manifest.schema.get('name', '?')!r} into {output_dir}: {', '.join(parts)}; "
        f"{split_mode(manifest)}."
    )
    if manifest.pseudo_novel_categories:
        text += (
            f" {len(manifest.pseudo_novel_categories)} pseudo-novel leaf categories are held out of training "
            "(validation-only)."
        )
    lacking = [
        f"{info['missing']:,} lack {name}"
        for name, info in manifest.modalities.items()
        if name != "image" and info["missing"] and (name != "description" or info["present"])
    ]
    if lacking:
        text += f" Of {manifest.sharded:,} products, {', '.join(lacking)}."
    if manifest.leakage:
        text += " " + describe_leakage(manifest.leakage)
    if manifest.skipped:
        reasons = ", ".join(f"{n:,} {kind.replace('_', ' ')}" for kind, n in manifest.skipped_by_kind.items())
        text += f" Skipped {len(manifest.skipped):,} rows ({reasons}); see 'skipped' in {MANIFEST_NAME}."
    else:
        text += " No rows skipped."
    if seconds is not None:
        text += f" Took {seconds:.1f} s; content hash {manifest.content_hash[:12]}."
    return text
