"""What every command group shares: argument types, tables, the catalog, exit codes."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

# Exit codes of `process`, for cron wrappers and supervisors.
EXIT_OK = 0


EXIT_LEFT_UNDONE = 1  # a run failed, files were given up on, or (--strict) frames are not reducible


EXIT_UNUSABLE = 2  # the catalog or the Dagster instance cannot be used: nothing was done


# `archive ingest`: every file archived now (or, with --check-only, would be); every file was
# archived already; some file is invalid (the others are archived); the archive store failed.
EXIT_ARCHIVED, EXIT_ALREADY_ARCHIVED, EXIT_INVALID, EXIT_STORE_FAILED = 0, 3, 4, 5


HOME_HELP = "REDUCTION_HOME folder (default: $REDUCTION_HOME or ~/reduction_home)"


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from err


def parse_size(text: str) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size NYxNX, e.g. 128x128") from err
    return ny, nx


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {
        c: max([len(c)] + [len(str(r.get(c) if r.get(c) is not None else "-")) for r in rows])
        for c in columns
    }
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append(
            "  ".join(str(row.get(c) if row.get(c) is not None else "-").ljust(widths[c]) for c in columns)
        )
    return "\n".join(lines)


def echo_to(to_stderr: bool):
    from tqdm import tqdm

    # tqdm.write keeps progress bars intact; with --json, standard output holds only the document.
    return lambda line: tqdm.write(line, file=sys.stderr if to_stderr else sys.stdout)


def open_catalog(home):
    from reduction_assets.catalog import Catalog

    catalog = Catalog(home.catalog_url())
    catalog.check()
    return catalog


def instruments_or_error(name: str | None) -> list[str] | None:
    from reduction_assets.instruments import load_registry

    names = load_registry().names
    if name and name not in names:
        print(f"unknown instrument {name!r}; known: {', '.join(names)}", file=sys.stderr)
        return None
    return [name] if name else names


def age(seconds) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds} s"


def version_line() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import reduction_assets

    try:
        dagster = version("dagster")
    except PackageNotFoundError:  # pragma: no cover - dagster is a dependency
        dagster = "not installed"
    python = sys.version.split()[0]
    return f"reduction-assets {reduction_assets.__version__} (dagster {dagster}, Python {python})"


def archive_store(home):
    from reduction_assets.orchestration.resources import resources_from_environment

    return resources_from_environment(str(home.root), lambda name, secret: os.environ.get(name)).archive
