"""Ranks started all at once (torchrun, SLURM): rank 0 generates the sample and shards it, the other ranks wait for
its shards and write nothing meanwhile (a waiting rank that generated the sample too raced rank 0's files)."""

from __future__ import annotations

import threading
import time

from datamodules.catalogue_datamodule import CatalogueDataModule
from datamodules.shard_request import REQUEST_NAME, request_matches


def test_a_waiting_rank_writes_nothing_until_rank_0_has_sharded(tmp_path):
    waiting = CatalogueDataModule(work_dir=str(tmp_path), sample_products=24)
    assert not waiting.shards_ready()
    assert list(tmp_path.iterdir()) == []  # polling generated nothing

    got = {}
    thread = threading.Thread(
        target=lambda: got.update(manifest=waiting.ensure_shards(wait=True, timeout_s=120))
    )
    thread.start()
    time.sleep(2.5)  # the waiting rank has polled at least twice
    assert thread.is_alive()
    assert list(tmp_path.iterdir()) == []

    manifest = CatalogueDataModule(work_dir=str(tmp_path), sample_products=24).ensure_shards()  # rank 0
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert got["manifest"] == manifest


def test_a_request_file_cut_short_is_not_a_match(tmp_path):
    (tmp_path / REQUEST_NAME).write_text('{"catalogue": "a.y')
    assert not request_matches(tmp_path, {"catalogue": "a.yaml"})
