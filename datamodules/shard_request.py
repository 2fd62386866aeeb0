"""Shard folders are reused: a folder holds the shards of one *request* (the catalogue, the split options, the split
rules, the sample's key), written beside them as ``shard_request.json``; the catalogue is sharded again only when
the request changes or the folder has none."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipita_core.manifest import Manifest
from datamodules.manifest import load_manifest
from datamodules.shard_outputs import write_text
from datamodules.sharding import shard_catalogue

REQUEST_NAME = "shard_request.json"


def request_matches(shard_dir: str | Path, request: dict[str, Any]) -> bool:
    """Whether ``shard_dir`` holds shards made from ``request`` (its request file, written last, equals it)."""
    request_file = Path(shard_dir) / REQUEST_NAME
    try:
        return request_file.is_file() and json.loads(request_file.read_text()) == request
    except json.JSONDecodeError:  # a request file from before it was written atomically, cut short
        return False


def wait_for_shards(ready: Callable[[], bool], shard_dir: str | Path, timeout_s: float) -> None:
    """Wait until ``ready()`` (another rank shards), polling every 2 s.

    Raises:
        TimeoutError: after ``timeout_s`` seconds, naming the folder.
    """
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no shards appeared in {str(shard_dir)!r} for {timeout_s:.0f}s")
        time.sleep(2)


def shard_for_request(
    catalogue: str, shard_dir: str | Path, request: dict[str, Any], num_workers: int = 0
) -> Manifest:
    """The manifest of ``shard_dir``'s shards of ``request``: the folder's own when it matches, else the catalogue
    sharded anew with the request's options (then the request file is written)."""
    if request_matches(shard_dir, request):
        return load_manifest(str(shard_dir), check_hashes=False)
    manifest = shard_catalogue(
        catalogue,
        str(shard_dir),
        shard_size=request["shard_size"],
        seed=request["seed"],
        val_fraction=request["val_fraction"],
        test_fraction=request["test_fraction"],
        unseen_fraction=request["unseen_fraction"],
        pseudo_novel_fraction=request.get("pseudo_novel_fraction", 0.0),
        num_workers=num_workers,  # the loaders' workers decode the catalogue's images too
    )
    write_text(Path(shard_dir) / REQUEST_NAME, json.dumps(request, indent=2))  # whole or absent to a poller
    return manifest
