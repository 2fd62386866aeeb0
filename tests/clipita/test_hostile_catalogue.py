"""A stranger's catalogue, as hostile as it gets (issue 20): paths out of the image root, symlinks out, FIFOs,
sockets, folders and ``/dev/zero`` named as images, oversize files and decompression bombs, control characters and
NUL in every field, duplicate, empty and huge values, in the three shapes (table with text, images-only table,
folder tree; CSV, JSONL, Parquet).

For random such catalogues ``clipita shard`` runs as a user runs it (``clipita.cli.main``, in this process under an
audit hook on ``open`` and a time limit), and:

- every row is sharded or skipped, each skipped one with the reason its kind must get (rows counted one by one);
- no traceback escapes: a catalogue with no good row ends in one ``clipita: error:`` line;
- no file outside the catalogue, the output folder and Python's own files is opened;
- nothing hangs (``HANG_SECONDS`` per case).

One fixed hostile catalogue (a table with text, every hostile kind once) then goes through ``clipita fit`` (a
subprocess), ``index`` and ``search`` (in this process), audit hook and time limit likewise (the programs' own
caches outside the case folder, such as matplotlib's font cache, are allowed; special files never are). Derandomised in CI; ``pytest -m fuzz`` (or ``HYPOTHESIS_PROFILE=fuzz``) explores.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import site
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import hostile_catalogue as hc
import pytest
from conftest import tiny_overrides
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis_profiles import ci_settings

from clipita.cli import main
from clipita_core.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
HANG_SECONDS = 30  # per shard case; a FIFO read without the checks blocks forever
SYSTEM_PREFIXES = ("/usr", "/etc", "/proc", "/sys", "/dev/null", "/dev/urandom", "/dev/shm")
PYTHON_PREFIXES = tuple(
    {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages())}
)
TABLE_POOL = sorted(set(hc.TABLE_KINDS) - {"good"})
TEXT_POOL = sorted((set(hc.TABLE_KINDS) | set(hc.TEXT_KINDS)) - {"good"})
TREE_POOL = sorted(set(hc.TREE_KINDS) - {"good"})
HOSTILE_KINDS = sorted(set(TEXT_POOL) | set(TREE_POOL))


# --------------------------------------------------------------------------------------- open audit, time limit
_opened: list[str] | None = None  # paths opened while recording (the hook is installed once, for the session)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes)):
        _opened.append(os.path.abspath(os.fsdecode(args[0])))


_hooked: list[bool] = []


class Hang(BaseException):
    """The case ran past its time limit (a BaseException: no ``except Exception`` in the code under test eats it)."""


@contextlib.contextmanager
def watched(seconds: float):
    """Record every path opened (``sys.addaudithook``) and raise :class:`Hang` after ``seconds``."""
    global _opened
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked.append(True)

    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    opened: list[str] = []
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    _opened = opened
    try:
        yield opened
    finally:
        _opened = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outside_opens(opened: list[str], allowed: list[Path]) -> list[str]:
    """Opened paths (symlinks resolved) outside ``allowed``, Python's own files and the system's (paths that do not
    exist were never read, and are left out)."""
    roots = [os.path.realpath(p) for p in allowed] + [REPO.as_posix(), *PYTHON_PREFIXES]
    out = []
    for path in opened:
        real = os.path.realpath(path)
        if not os.path.lexists(real):  # a failed open read nothing (e.g. an import hook's pseudo path)
            continue
        inside = any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)
        if not inside and not real.startswith(SYSTEM_PREFIXES):
            out.append(real)
    return sorted(set(out))


def special_files(opened: list[str]) -> list[str]:
    """Opened paths that are FIFOs, sockets or devices (``/dev/null`` and the random devices aside)."""
    out = []
    for path in set(opened):
        real = os.path.realpath(path)
        try:
            mode = os.stat(real).st_mode
        except OSError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and not real.startswith(SYSTEM_PREFIXES):
            out.append(real)
    return sorted(out)


def run_in_process(args: list[str], seconds: float = HANG_SECONDS) -> tuple[int, str, str, list[str]]:
    """``clipita <args>`` through :func:`clipita.cli.main`: (exit code, stdout, stderr, paths opened). Any exception
    but ``SystemExit`` escaping ``main`` is a traceback the user would see, and fails the test here."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with watched(seconds) as opened, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue(), opened


# ------------------------------------------------------------------------------------------------- strategies
@st.composite
def hostile_catalogues(draw) -> dict:
    """A spec for :mod:`hostile_catalogue`: shape, format, ``allow_outside_root``, and rows of (kind, leaf), about
    half of them good."""
    shape = draw(st.sampled_from(["table_text", "table_images", "folder_tree"]))
    pool = {"table_text": TEXT_POOL, "table_images": TABLE_POOL, "folder_tree": TREE_POOL}[shape]
    kind = st.one_of(st.just("good"), st.sampled_from(pool))
    rows = draw(st.lists(st.tuples(kind, st.integers(0, len(hc.LEAVES) - 1)), min_size=1, max_size=20))
    return {
        "shape": shape,
        "rows": rows,
        "format": draw(st.sampled_from(["csv", "jsonl", "parquet"])),
        "allow_outside": draw(st.booleans()),
        "sidecar_text": draw(st.booleans()),
    }


def build(case: Path, spec: dict) -> hc.Built:
    if spec["shape"] == "folder_tree":
        return hc.build_tree(case, spec["rows"], spec["sidecar_text"], spec["allow_outside"])
    text = spec["shape"] == "table_text"
    return hc.build_table(case, spec["rows"], spec["format"], text, spec["allow_outside"])


def every_kind(shape: str, pool: list[str], **extra) -> dict:
    """An example with every hostile kind of ``shape`` once, after three good rows."""
    rows = [("good", i) for i in range(3)] + [(k, i % len(hc.LEAVES)) for i, k in enumerate(pool)]
    spec = {"shape": shape, "rows": rows, "format": "csv", "allow_outside": False, "sidecar_text": True}
    return {**spec, **extra}


# ------------------------------------------------------------------------------------------------------ tests
def check_shard(spec: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp)
        built = build(case, spec)
        out = case / "out"
        code, stdout, stderr, opened = run_in_process(
            ["shard", str(built.schema), str(out), "--progress", "false"]
        )
        assert "Traceback" not in stderr + stdout
        allowed = [built.root, out] + (
            [built.outside / "secret.jpg", built.outside / "secret.txt"] if spec["allow_outside"] else []
        )
        assert outside_opens(opened, allowed) == [], "files outside the catalogue were opened"
        assert special_files(opened) == []
        rows = len(built.expected)
        if code != 0:  # only a catalogue with no good row may fail, in one line naming the reasons
            assert all(kind is not None for kind in built.expected.values()), stderr
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                "clipita: error: no product of catalogue 'hostile'"
            )
            assert f"all {rows:,} rows were skipped" in lines[0]
            return
        manifest = Manifest.read(out / "manifest.json")
        assert manifest.input_rows == rows
        assert manifest.sharded + len(manifest.skipped) == rows
        skipped = {s["row"]: s for s in manifest.skipped}
        assert len(skipped) == len(manifest.skipped)  # one entry per row
        for row, expected in built.expected.items():
            if expected is None:
                assert row not in skipped, f"row {row} should be sharded: {skipped.get(row)}"
            else:
                assert row in skipped, f"row {row} ({expected}) was not skipped"
                assert expected in skipped[row]["kinds"] and skipped[row]["reason"], skipped[row]


@pytest.mark.fuzz
@ci_settings(30)
@given(hostile_catalogues())
@example(every_kind("table_text", TEXT_POOL))
@example(every_kind("table_text", TEXT_POOL, format="jsonl", allow_outside=True))
@example(every_kind("table_text", TEXT_POOL, format="parquet"))
@example(every_kind("table_images", TABLE_POOL, format="parquet", allow_outside=True))
@example(every_kind("folder_tree", TREE_POOL))
@example(every_kind("folder_tree", TREE_POOL, allow_outside=True, sidecar_text=False))
@example({**every_kind("table_images", TABLE_POOL), "rows": [("fifo", 0), ("device", 1), ("bomb", 2)]})
def test_a_hostile_catalogue_shards_every_row_or_says_why(spec):
    check_shard(spec)


def test_the_hostile_kinds_cover_the_issue():
    """The property test draws every kind of hostile input the issue names (and more: see ``HOSTILE_KINDS``)."""
    named = {"dotdot", "absolute", "symlink_out", "fifo", "device", "socket", "directory", "bomb", "oversize"}
    named |= {
        "control_id",
        "nul_id",
        "control_category",
        "nul_title",
        "duplicate_id",
        "empty_id",
        "huge_title",
    }
    assert named <= set(HOSTILE_KINDS) and "good" not in HOSTILE_KINDS


# ------------------------------------------------------------------------------------------ fit, index, search
HOOKED_CLI = """\
import os, sys
log = open(os.environ["OPEN_LOG"], "a", encoding="utf-8", errors="surrogateescape")
def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        log.write(os.path.abspath(os.fsdecode(args[0])) + "\\n")
sys.addaudithook(audit)
from clipita.cli import main
main()
"""


def run_hooked(args: list[str], case: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``clipita <args>`` in a subprocess logging every open to ``case/opens.log``; a timeout fails as a hang."""
    script = case / "hooked_cli.py"
    script.write_text(HOOKED_CLI)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OPEN_LOG=str(case / "opens.log"),
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        CLIPITA_QUIET="1",
    )
    env.pop("CLIPITA_DEBUG", None)
    cmd = [sys.executable, str(script), *args]
    return subprocess.run(cmd, cwd=case, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_hostile_catalogue_fits_indexes_and_searches(tmp_path):
    case = tmp_path / "case"
    rows = [("good", i % len(hc.LEAVES)) for i in range(30)]
    rows += [(k, i % len(hc.LEAVES)) for i, k in enumerate(TEXT_POOL)]
    built = hc.build_table(case, rows, "jsonl", text=True)
    good_ids = {f"p{i}" for i, (kind, _) in enumerate(rows) if built.expected[i + 1] is None}
    work, index = case / "work", case / "index"
    fit = run_hooked(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / "quickstart.yaml"),
            *tiny_overrides(
                {
                    "data.catalogue": str(built.schema),
                    "data.work_dir": str(work),
                    "model.net.image_model": "test_efficientnet",
                    "model.net.image_weights": "none",
                    "model.net.image_size": 32,
                    "model.net.modalities": ["image"],
                    "trainer.max_epochs": 1,
                    "trainer.enable_model_summary": False,
                    "test_after_fit": False,
                }
            ),
            "--trainer.logger.init_args.save_dir",
            str(case / "runs"),
        ],
        case,
    )
    assert fit.returncode == 0 and "Traceback" not in fit.stderr, fit.stderr[-3000:]
    manifest = Manifest.read(work / "shards" / "seed0" / "manifest.json")
    assert manifest.sharded == len(good_ids) and manifest.input_rows == len(rows)
    ckpt = next((case / "runs").rglob("last.ckpt"))
    opened = (case / "opens.log").read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    assert len(opened) > 100  # the hook saw the imports
    # index and search in this process (their imports are paid already), under the same audit and a time limit
    args = ["index", "--ckpt", str(ckpt), "--output_dir", str(index), "--split", "all"]
    code, _, stderr, opened_index = run_in_process(
        [*args, "--accelerator", "cpu", "--progress", "false"], 300
    )
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    code, stdout, stderr, opened_search = run_in_process(
        ["search", "--index", str(index), "--json", "-k", "100", "Fruit > Apple", "Kale"], 120
    )
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    queries = json.loads(stdout)["queries"]
    found = {hit["id"] for query in queries for hit in query["results"]}
    assert found and found <= good_ids  # only products that passed every check are indexed
    # inside the case folder only the catalogue and the run's own folders; anywhere, no special file (the
    # program's own caches outside the case folder, e.g. matplotlib's font cache, are no catalogue's doing)
    opened += opened_index + opened_search
    allowed = [built.root, work, index, case / "runs", case / "hooked_cli.py", case / "opens.log"]
    inside_case = [p for p in opened if os.path.realpath(p).startswith(os.path.realpath(case) + "/")]
    assert outside_opens(inside_case, allowed) == []
    assert special_files(opened) == []
