"""Two ``clipita sweep`` workers sharing one Optuna study on a real PostgreSQL server (loopback, throwaway cluster).

Needs the PostgreSQL server binaries (``apt-get install postgresql``: ``initdb``/``pg_ctl`` under
``/usr/lib/postgresql/<version>/bin``) and ``psycopg2`` (``pip install -e ".[postgres]"``). The server refuses to run
as root, so as root the cluster is created and started as the ``postgres`` user (else ``nobody``) via ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, tiny_overrides

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
TINY = tiny_config({"trainer.enable_model_summary": False, "test_after_fit": False})


def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest installed version), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url(tmp_path) -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on a free loopback port; yield a SQLAlchemy URL of an empty database."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb/pg_ctl); CI installs them with apt-get install postgresql"
        )
    pytest.importorskip(
        "psycopg2", reason="psycopg2 is needed for PostgreSQL storages: pip install -e '.[postgres]'"
    )
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses root: hand a world-reachable folder to an unprivileged user
        user = "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = "nobody"
        root = Path(tempfile.mkdtemp(prefix="clipita-pg-", dir="/tmp"))
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        prefix = ["runuser", "-u", user, "--"]
    else:
        root = tmp_path / "pg"
        root.mkdir()
    data, sockets, log = root / "data", root / "sockets", root / "server.log"

    def run(*cmd: str) -> None:
        result = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            server_log = log.read_text() if log.is_file() else ""
            raise RuntimeError(f"{cmd[0]} failed:\n{result.stdout}\n{result.stderr}\n{server_log}")

    port = free_port()
    try:
        run(
            str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "clipita", "-E", "UTF8", "--no-sync"
        )
        run("mkdir", "-p", str(sockets))
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "clipita", "optuna")
        yield f"postgresql+psycopg2://clipita@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def prepare_tiny_features(work_dir: Path) -> None:
    """Shard + encode the tiny sample once, so the workers do not race to build the same feature cache."""
    from clipita.experiment import fit_and_test

    overrides = tiny_overrides({"trainer.enable_model_summary": False, "test_after_fit": False})
    fit_and_test(
        str(QUICKSTART),
        [
            *overrides,
            "--data.work_dir",
            str(work_dir),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.logger",
            "false",
        ],
        test=False,
    )


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(postgres_url, tmp_path):
    import optuna

    work = tmp_path / "work"
    prepare_tiny_features(work)
    n_trials = 4
    sweep_yaml = tmp_path / "pg.yaml"
    sweep_yaml.write_text(
        yaml.safe_dump(
            {
                "base_config": str(QUICKSTART),
                "overrides": {**TINY, "data.work_dir": str(work), "trainer.max_epochs": 2},
                "search_space": {
                    "model.lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
                    "model.loss.init_args.temperature": {
                        "type": "float",
                        "low": 0.03,
                        "high": 0.15,
                        "log": True,
                    },
                },
                "pruner": {"name": "none"},
                "n_trials": n_trials,
            }
        )
    )
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "clipita.cli",
        "sweep",
        str(sweep_yaml),
        "--storage",
        postgres_url,
        "--study_name",
        "two_workers",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]  # noqa: SIM115 - closed below
    workers = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs
    ]
    deadline = time.monotonic() + 900
    for worker in workers:
        worker.wait(timeout=max(1.0, deadline - time.monotonic()))
    for log in logs:
        log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]

    study = optuna.load_study(study_name="two_workers", storage=postgres_url)
    trials = study.trials
    assert len(trials) == n_trials, [t.state for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["worker_pid"] for t in trials}
    assert pids == {w.pid for w in workers}, (pids, [w.pid for w in workers])
    assert all("postgresql" in out and "complete" in out for out in outputs)  # both printed the final summary
    assert (tmp_path / "out" / "two_workers" / "best.yaml").is_file()
