"""The layering rule (ARCHITECTURE.md): the shared floor (``clipita_core``) imports no other package of the repo,
the libraries never import the apps nor each other, and no module import cycle exists. Checked from the source text
(ast), so a lazy import inside a function counts too. The floor's vocabulary is defined there and nowhere else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("clipita_core", "lightning_modules", "datamodules", "clipita")
FORBIDDEN = {
    "clipita_core": ("clipita", "datamodules", "lightning_modules"),
    "lightning_modules": ("clipita", "datamodules"),
    "datamodules": ("clipita", "lightning_modules"),
    "clipita": (),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved against the file's package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def graph() -> dict[str, set[str]]:
    files = [f for p in PACKAGES for f in (REPO / p).rglob("*.py")]
    modules = {module_name(f): f for f in files}
    return {m: {i for i in imports_of(f) if i in modules and i != m} for m, f in modules.items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_a_library_never_imports_the_app_or_the_other_library(package):
    bad = [
        f"{m} imports {i}"
        for m, deps in graph().items()
        if m.split(".")[0] == package
        for i in deps
        if i.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
    edges = graph()
    # a package's __init__ re-exporting its own submodules is not a cycle of concepts
    edges = {
        m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
        for m, deps in edges.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_floor_needs_only_the_standard_library_and_numpy():
    """Importing a name or a tokenizer must not pull torch, Lightning or pandas into a process."""
    allowed = {"numpy", "clipita_core", "__future__"}
    bad = [
        f"{module_name(f)} imports {i}"
        for f in (REPO / "clipita_core").rglob("*.py")
        for i in imports_of(f)
        if i and i.split(".")[0] not in allowed and i.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not bad, "\n".join(bad)


# the floor's vocabulary: a module that defines one of these names again has copied it
FLOOR_NAMES = {
    "CATEGORY_SEPARATOR",
    "CategoryPath",
    "CategoryText",
    "CategoryTree",
    "MODALITIES",
    "Modality",
    "SPLITS",
    "attribute_texts",
    "category_text_of",
    "format_path",
    "parse_path",
    "plural_stem",
}


def top_level_definitions(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.id for t in targets if isinstance(t, ast.Name))
    return out


def test_the_shared_vocabulary_is_defined_only_in_the_floor():
    copies = [
        f"{module_name(f)} defines {name}"
        for package in PACKAGES
        if package != "clipita_core"
        for f in (REPO / package).rglob("*.py")
        for name in sorted(top_level_definitions(f) & FLOOR_NAMES)
    ]
    assert not copies, "\n".join(copies)
    defined = set().union(*(top_level_definitions(f) for f in (REPO / "clipita_core").rglob("*.py")))
    assert FLOOR_NAMES <= defined, sorted(FLOOR_NAMES - defined)
