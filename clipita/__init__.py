"""clipita's apps: the ``clipita`` command and what it runs (encode, leaderboard, sweep, index, search, gallery,
baselines). They import the model library (``lightning_modules``) and the data library (``datamodules``); the
libraries never import this package."""

from __future__ import annotations
