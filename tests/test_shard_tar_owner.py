"""Every read and write of shard tars goes through the codec module (``datamodules/shard_io.py``): no other module
of the packages or the benchmarks opens a tar itself. Checked from the source text, so a lazy import counts too."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("clipita_core", "lightning_modules", "datamodules", "clipita", "benchmarks")
OWNER = REPO / "datamodules" / "shard_io.py"
EXEMPT: dict[str, str] = {}  # repo-relative path -> why it may open tars itself (none today)
TAR_ACCESS = re.compile(r"tarfile\.open|\bimport tarfile\b|WebDataset\(|\bTarWriter\(|tarfile_samples")


def offenders(files: list[Path]) -> list[tuple[Path, int, str]]:
    """``(file, line number, line)`` of every line that opens a tar."""
    out = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TAR_ACCESS.search(line):
                out.append((path, number, line.strip()))
    return out


def scanned_files() -> list[Path]:
    files = [f for p in SCANNED for f in sorted((REPO / p).rglob("*.py"))]
    return [f for f in files if f != OWNER and str(f.relative_to(REPO)) not in EXEMPT]


def test_only_the_codec_module_opens_shard_tars():
    bad = offenders(scanned_files())
    assert not bad, "open shard tars through datamodules.shard_io:\n" + "\n".join(
        f"{path.relative_to(REPO)}:{number}: {line}" for path, number, line in bad
    )


def test_the_check_finds_a_tar_reader(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("import webdataset as wds\nfor s in wds.WebDataset(url): pass\n", encoding="utf-8")
    plain = tmp_path / "plain.py"
    plain.write_text("loader = wds.WebLoader(data)\n", encoding="utf-8")
    writer = tmp_path / "writer.py"
    writer.write_text(
        "with ShardTarWriter(p) as s: pass\nwith wds.TarWriter(p) as s: pass\n", encoding="utf-8"
    )
    assert [(p.name, n) for p, n, _ in offenders([sneaky, plain, writer])] == [
        ("sneaky.py", 2),
        ("writer.py", 2),
    ]
    assert len(offenders([OWNER])) >= 4  # the owner itself opens tars every way the check looks for
