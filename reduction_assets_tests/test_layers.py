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


BELOW_DAGSTER = (
    "reduction",
    "kernels",
    "catalog",
    "fits",
    "storage",
    "simulate.py",
    "instruments.py",
    "checksums.py",
    "provenance.py",
    "keys.py",
    "home.py",
    "landing.py",
    "ingest.py",
    "verify.py",
)


@pytest.mark.parametrize("part", BELOW_DAGSTER)
def test_no_dagster_below_the_asset_layer(part):
    assert offending(files(part), ("dagster",)) == []


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
        for p in files("assets")
        for line in p.read_text().splitlines()
        if store_folders.search(line)
    ]
    assert uses == []
