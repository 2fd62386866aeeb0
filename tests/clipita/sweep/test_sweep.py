"""``clipita sweep`` (``clipita.sweep.command``): its help, and real sweeps on the tiny sample catalogue
(failing, pruned, resumed, DDP, interrupted and killed trials; the base config pinned)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_config
from optuna.trial import TrialState
from sweep_files import ALL, QUICKSTART, REPO, write_sweep

from clipita.cli import main
from clipita.sweep.command import sweep
from clipita.sweep.spec import load_sweep_spec

TINY = tiny_config({"trainer.max_epochs": 3, "trainer.enable_model_summary": False, "test_after_fit": False})


def test_sweep_help_documents_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--n_trials",
        "--storage",
        "--study_name",
        "--sampler",
        "--pruner",
        "--overrides",
        "journal:",
    ):
        assert option in out, option


BAD_MODALITIES = ["image", "colour"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> dict:
    """One 4-trial study on the tiny sample: good baseline, a trial that fails, a hopeless one, one sampled."""
    root = tmp_path_factory.mktemp("sweep")
    good = {"model.lr": 1e-3, "model.net.fusion": "concat", "model.net.modalities": ALL}
    path = write_sweep(
        root / "tiny.yaml",
        base_config=str(QUICKSTART),
        overrides={**TINY, "data.work_dir": str(root / "work")},
        search_space={
            "model.lr": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True},
            "model.net.fusion": {"type": "categorical", "choices": ["concat", "weighted_sum"]},
            "model.net.fusion_weights": {
                "type": "simplex",
                "keys": ALL,
                "when": {"model.net.fusion": "weighted_sum"},
            },
            "model.net.modalities": {"type": "categorical", "choices": [ALL, BAD_MODALITIES]},
        },
        sampler={"name": "tpe", "seed": 0},
        # after one complete trial, a trial below its value at the same epoch stops
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        n_trials=4,
        enqueue=[good, {**good, "model.net.modalities": BAD_MODALITIES}, {**good, "model.lr": 1e-7}],
    )
    summary = sweep(str(path), output_dir=str(root / "out"))
    study_dir = root / "out" / "tiny"
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir / 'study.db'}")
    return {"root": root, "path": path, "summary": summary, "study": study, "study_dir": study_dir}


@pytest.mark.slow
def test_sweep_finishes_and_writes_a_runnable_best_yaml(tiny_sweep, capsys):
    study, study_dir = tiny_sweep["study"], tiny_sweep["study_dir"]
    trials = study.trials
    assert len(trials) == 4
    assert trials[0].state == TrialState.COMPLETE and trials[0].value > 0.4
    assert study.best_trial.value == max(t.value for t in trials if t.state == TrialState.COMPLETE)
    attrs = trials[0].user_attrs  # the full validation metric set of the scored epoch
    for key in ("val/map@10", "val/all/mrr", "val/all/r_precision", "val/specific/map@10", "val/general/p@1"):
        assert key in attrs, key
    assert attrs["val/map@10"] == pytest.approx(trials[0].value)
    assert attrs["epochs_run"] == 3 and attrs["worker_pid"] > 0
    assert (study_dir / "trial_0000" / "version_0" / "metrics.csv").is_file()
    assert (
        study_dir / "trial_0000" / "version_0" / "checkpoints" / "last.ckpt"
    ).is_file()  # the trial's run folder
    assert len(json.loads((study_dir / "trial_0000" / "val_history.json").read_text())) == 3
    for name in ("best.yaml", "optimization_history.png", "param_importances.png", "summary.json"):
        assert (study_dir / name).is_file(), name
    assert tiny_sweep["summary"]["states"]["COMPLETE"] >= 1
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(study_dir / "best.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == pytest.approx(study.best_trial.params["model.lr"])
    assert printed["data"]["sample_products"] == 160 and printed["trainer"]["max_epochs"] == 3


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_sweep):
    failed = tiny_sweep["study"].trials[1]
    assert failed.state == TrialState.FAIL
    assert failed.params["model.net.modalities"] == json.dumps(BAD_MODALITIES)
    assert "colour" in failed.user_attrs["error"] and "RuntimeError" in failed.user_attrs["error"]
    assert [t.number for t in tiny_sweep["study"].trials] == [0, 1, 2, 3]  # later trials still ran
    assert any(f["number"] == 1 for f in tiny_sweep["summary"]["failed"])


@pytest.mark.slow
def test_pruning_stops_a_hopeless_trial_early(tiny_sweep):
    good, hopeless = tiny_sweep["study"].trials[0], tiny_sweep["study"].trials[2]
    assert hopeless.params["model.lr"] == 1e-7
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.user_attrs["epochs_run"] < good.user_attrs["epochs_run"] == 3
    assert max(hopeless.intermediate_values.values()) < good.intermediate_values[0]


@pytest.mark.slow
def test_a_stopped_study_resumes_to_its_total(tiny_sweep, tmp_path):
    copy = tmp_path / "out" / "tiny"
    shutil.copytree(tiny_sweep["study_dir"], copy)
    summary = sweep(str(tiny_sweep["path"]), output_dir=str(tmp_path / "out"), n_trials=5)
    assert summary["n_trials"] == 5
    assert (copy / "trial_0004" / "val_history.json").is_file() or summary["states"]["FAIL"] >= 2


@pytest.mark.slow
def test_ddp_ranks_join_their_parents_trial(tiny_sweep, tmp_path):
    """Two CPU ranks (gloo) per trial: rank 1, re-launched by Lightning, joins rank 0's trial instead of starting
    its own; only rank 0 reports, and a pruning decision stops both ranks (read back with ``check_pruned``)."""
    import os
    import subprocess
    import sys

    path = write_sweep(
        tmp_path / "ddp.yaml",
        base_config=str(QUICKSTART),
        overrides={
            **TINY,
            "data.work_dir": str(tiny_sweep["root"] / "work"),  # the features the fixture built
            "trainer.devices": 2,
            "trainer.strategy": "ddp",
            "trainer.max_epochs": 2,
        },
        search_space={"model.lr": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True}},
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        n_trials=2,
        enqueue=[{"model.lr": 1e-3}, {"model.lr": 1e-7}],
    )
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "clipita.cli",
        "sweep",
        str(path),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{tmp_path / 'out' / 'ddp' / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]  # no trial per rank
    assert study.trials[0].user_attrs["epochs_run"] == 2 and study.trials[1].user_attrs["epochs_run"] == 1


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_requeues_the_running_trial(tiny_sweep, tmp_path):
    """Pre-emption (SIGTERM) or Ctrl-C mid-trial: the worker stops (exit 130), the trial is FAIL ("interrupted") and
    its parameters are queued again, so the next run of the same command re-runs it first."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = write_sweep(
        tmp_path / "term.yaml",
        base_config=str(QUICKSTART),
        overrides={**TINY, "data.work_dir": str(tiny_sweep["root"] / "work"), "trainer.max_epochs": 200},
        search_space={"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        n_trials=1,
    )
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "clipita.cli", "sweep", str(path), "--output_dir", str(out)]
    worker = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    history = out / "term" / "trial_0000" / "val_history.json"
    deadline = time.monotonic() + 300
    while not history.is_file() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=300)[0]
    assert worker.returncode == 130, output[-3000:]
    study = optuna.load_study(study_name="term", storage=f"sqlite:///{out / 'term' / 'study.db'}")
    interrupted, queued = study.trials
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["error"].startswith("interrupted")
    assert 1 <= interrupted.user_attrs["epochs_run"] < 200
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == interrupted.params
    assert queued.user_attrs["requeued_from"] == 0


def test_trials_keep_the_base_config_the_study_began_with(tmp_path, capsys):
    from clipita.sweep.command import pin_base_config

    base = tmp_path / "base.yaml"
    base.write_text(QUICKSTART.read_text())
    sweep_yaml = write_sweep(
        tmp_path / "pin.yaml",
        base_config=str(base),
        output_dir=str(tmp_path / "out"),
        search_space={"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    )
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'pin.db'}", study_name="pin")
    first = load_sweep_spec(str(sweep_yaml))
    pin_base_config(first, study)
    assert Path(first.base_config) == tmp_path / "out" / "pin" / "base_config.yaml"
    base.write_text(QUICKSTART.read_text().replace("max_epochs: 15", "max_epochs: 99"))  # edited mid-sweep
    later = load_sweep_spec(str(sweep_yaml))
    pin_base_config(later, study)
    assert "changed since study 'pin' began" in capsys.readouterr().out
    assert Path(later.base_config).read_text() == QUICKSTART.read_text()
    assert later.base_config_origin == str(base)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_fails_its_trial_and_another_worker_finishes(tiny_sweep, tmp_path):
    """SIGKILL (no chance to clean up) mid-trial: the trial's heartbeat stops, the next worker marks it FAIL after the
    grace period (3 x heartbeat_interval) and runs it again, and the study completes with that worker."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = write_sweep(
        tmp_path / "kill.yaml",
        base_config=str(QUICKSTART),
        overrides={**TINY, "data.work_dir": str(tiny_sweep["root"] / "work"), "trainer.max_epochs": 40},
        search_space={"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        n_trials=2,
        heartbeat_interval=1,
    )
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "clipita.cli", "sweep", str(path), "--output_dir", str(out)]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "kill" / "trial_0000" / "val_history.json"
    deadline = time.monotonic() + 300
    while not history.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, "the first worker ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    time.sleep(4)  # past the grace period: the killed trial's heartbeat is stale
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    study = optuna.load_study(study_name="kill", storage=f"sqlite:///{out / 'kill' / 'study.db'}")
    killed = study.trials[0]
    assert killed.state == TrialState.FAIL
    finished = [t for t in study.trials[1:] if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert finished, [t.state for t in study.trials]
    assert any(t.params == killed.params for t in finished)  # the killed trial ran again to the end
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
