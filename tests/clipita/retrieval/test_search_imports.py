"""``clipita search`` and ``clipita gallery`` read an index without the ``index`` command: importing them loads
neither Lightning nor the DataModule (the index folder's contract is ``clipita_core.index_info``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HEAVY = (
    "lightning",
    "datamodules.catalogue_datamodule",
    "clipita.retrieval.index",
    "clipita.retrieval.index_job",
)


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_search_and_gallery_import_neither_lightning_nor_the_datamodule():
    loaded = modules_after_import("clipita.retrieval.search, clipita.retrieval.gallery")
    assert {"clipita.retrieval.search", "clipita.retrieval.gallery", "clipita_core.index_info"} <= loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_index_command_does_load_lightning():
    """The check above can fail: the index command's own import does pull in what search must not."""
    loaded = modules_after_import("clipita.retrieval.index")
    assert {"lightning", "datamodules.catalogue_datamodule"} <= loaded
