"""Retrieval over a trained model's embeddings: ``clipita index`` (embed a catalogue into an index folder),
``clipita search`` (rank its products for a category name) and ``clipita gallery`` (an HTML page of the top
images). The index folder's contract (file names, ``index.json``) is :mod:`clipita_core.index_info`."""

from __future__ import annotations
