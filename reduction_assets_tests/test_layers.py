"""The layer rules of the package, checked on its syntax trees: science and kernels know nothing of
Dagster or databases, kernels do no file I/O, and the FITS and science layers depend one way only."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reduction_assets"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def files(*parts: str) -> list[Path]:
    chosen = []
    for part in parts:
        target = PACKAGE / part
        chosen.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return chosen


def offending(paths: list[Path], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in paths
        for name in imports_of(path)
        if name.startswith(prefixes)
    )


# Only the orchestration layer imports dagster; every other part of the package is listed here from
# the folder tree itself, so a new package or module is guarded the day it appears.
ORCHESTRATION = "orchestration"
DAGSTER_FREE = sorted(
    entry.name
    for entry in PACKAGE.iterdir()
    if entry.name != ORCHESTRATION and (entry.suffix == ".py" or (entry / "__init__.py").exists())
)


def test_the_dagster_free_parts_are_every_part_but_orchestration():
    assert {"tasks", "support", "cli", "simulator", "reduction", "kernels", "catalog", "fits"} <= set(
        DAGSTER_FREE
    )
    assert ORCHESTRATION not in DAGSTER_FREE


@pytest.mark.parametrize("part", DAGSTER_FREE)
def test_no_dagster_outside_the_orchestration_layer(part):
    assert offending(files(part), ("dagster",)) == []


def test_the_top_level_holds_few_loose_entries():
    entries = [
        e.name
        for e in PACKAGE.iterdir()
        if e.name not in ("__init__.py", "__pycache__") and not e.name.startswith(".")
    ]
    assert len(entries) <= 12, sorted(entries)


@pytest.mark.parametrize(
    ("part", "above"),
    [
        # Dagster-free work never reaches up into the Dagster layer or the command line.
        ("tasks", ("reduction_assets.orchestration", "reduction_assets.cli")),
        ("support", ("reduction_assets.orchestration", "reduction_assets.cli", "reduction_assets.tasks")),
        ("simulator", ("reduction_assets.orchestration", "reduction_assets.cli", "reduction_assets.tasks")),
        ("catalog", ("reduction_assets.orchestration", "reduction_assets.cli", "reduction_assets.tasks")),
        ("storage", ("reduction_assets.orchestration", "reduction_assets.cli", "reduction_assets.tasks")),
        ("fits", ("reduction_assets.orchestration", "reduction_assets.cli", "reduction_assets.tasks")),
        # The Dagster layer calls tasks; the command line calls both; nothing calls the command line.
        ("orchestration", ("reduction_assets.cli",)),
    ],
)
def test_dependencies_point_down_the_layers(part, above):
    assert offending(files(part), above) == []


def test_kernels_read_no_files():
    assert (
        offending(files("kernels"), ("astropy.io", "reduction_assets.fits", "reduction_assets.storage")) == []
    )


def test_science_and_kernels_do_no_sql_and_no_io():
    assert (
        offending(
            files("reduction", "kernels"),
            (
                "sqlalchemy",
                "reduction_assets.catalog",
                "astropy.io",
                "reduction_assets.fits",
                "reduction_assets.storage",
            ),
        )
        == []
    )


def test_only_the_catalog_speaks_sql():
    outside = [p for p in PACKAGE.rglob("*.py") if PACKAGE / "catalog" not in p.parents]
    assert offending(outside, ("sqlalchemy",)) == []


def test_assets_build_no_paths_from_the_home_but_the_landing_area():
    store_folders = re.compile(
        r"(layout\(\)|home)\.(raw|products|quarantine)\b|\.(raw|products|quarantine)"
        r"\s*/|path_for|Path\("
    )
    uses = [
        f"{p.relative_to(PACKAGE)}: {line.strip()}"
        for p in files("orchestration/assets")
        for line in p.read_text().splitlines()
        if store_folders.search(line)
    ]
    assert uses == []


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules a file imports when it is itself imported (function bodies aside)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            # `from package import submodule` needs the submodule, not the package's own body.
            found.update(submodules or {node.module})
    return found & modules


def import_cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    graph = {name: module_level_imports(path, set(paths)) - {name} for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_no_import_cycles_in_the_package():
    assert import_cycles() == []


# An asset body gathers inputs, calls a task and reports; the work itself is small functions too.
DAGSTER_LAYER_LIMIT, ELSEWHERE_LIMIT = 40, 80
NO_SIZE_LIMIT = ("kernels", "simulator", "migrations")  # numba kernels, the simulator, generated


def long_functions() -> list[str]:
    """Functions over their layer's limit, counted from ``def`` to the last line (docstring included)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if any(part in NO_SIZE_LIMIT for part in parts):
            continue
        limit = DAGSTER_LAYER_LIMIT if parts[0] == ORCHESTRATION else ELSEWHERE_LIMIT
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > limit:
                    found.append(f"{'/'.join(parts)}:{node.lineno} {node.name}: {size} lines > {limit}")
    return found


def test_no_function_is_longer_than_its_layer_allows():
    assert long_functions() == []
