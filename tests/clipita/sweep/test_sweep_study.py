"""A sweep's study storage (``clipita.sweep.study``)."""

from __future__ import annotations

import optuna

from clipita.sweep.study import make_storage


def test_journal_storage(tmp_path):
    storage = make_storage(f"journal:{tmp_path / 'j' / 'study.log'}")
    study = optuna.create_study(storage=storage, study_name="j", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="j", storage=make_storage(f"journal:{tmp_path / 'j' / 'study.log'}"))
    assert len(again.trials) == 2
