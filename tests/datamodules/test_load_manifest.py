"""Loading a shard folder's manifest (``datamodules.manifest.load_manifest``): a missing, corrupt or incomplete
manifest and a deleted, truncated or altered shard each fail naming the file; the shard URLs of a split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shop_catalogue import build_catalogue

from clipita_core.manifest import Manifest
from datamodules.sharding import (
    ManifestError,
    load_manifest,
    shard_catalogue,
)


@pytest.fixture
def shard_copy(tmp_path: Path) -> tuple[Manifest, Path]:
    yaml_path, _ = build_catalogue(tmp_path, bad_rows=False)
    out = tmp_path / "out"
    return shard_catalogue(str(yaml_path), str(out), shard_size=10, progress=False), out


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json in"):
        load_manifest(str(tmp_path))


def test_deleted_shard_is_named(shard_copy) -> None:
    manifest, out = shard_copy
    name = manifest.split("train").shards[1]
    (out / name).unlink()
    with pytest.raises(ManifestError, match=f"{name}.* is missing"):
        load_manifest(str(out))


def test_truncated_shard_is_named(shard_copy) -> None:
    manifest, out = shard_copy
    name = manifest.split("train").shards[0]
    data = (out / name).read_bytes()
    (out / name).write_bytes(data[:-1024])
    with pytest.raises(ManifestError, match=f"{name}.* has .* bytes"):
        load_manifest(str(out))


def test_altered_shard_same_size_is_named(shard_copy) -> None:
    manifest, out = shard_copy
    name = manifest.split("test").shards[0]
    data = bytearray((out / name).read_bytes())
    data[700] ^= 0xFF
    (out / name).write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=f"{name}.* sha256"):
        load_manifest(str(out))
    load_manifest(str(out), check_hashes=False)  # sizes alone still match


def test_corrupt_manifest_json_is_named(shard_copy) -> None:
    _, out = shard_copy
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ManifestError, match="manifest.json.* is not valid JSON"):
        load_manifest(str(out))


def test_manifest_missing_keys_is_named(shard_copy) -> None:
    _, out = shard_copy
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["splits"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"manifest.json.* lacks required keys \['splits'\]"):
        load_manifest(str(out))


def test_shard_urls(shard_copy) -> None:
    manifest, out = shard_copy
    urls = manifest.shard_urls(out, "train")
    assert urls and all(Path(u).parent == out and Path(u).exists() for u in urls)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        manifest.shard_urls(out, "dev")
