"""Photometric reference catalogues: CSV files in the home's ``reference/`` folder, each with columns
``ra`` and ``dec`` (degrees) and one magnitude column per filter (named as the registry normalises
filters: ``gp``, ``rp``, ``V`` ...). All files together are one catalogue; a star missing in a filter
has an empty cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from reduction_assets.reduction.quality import Reference


class ReferenceError(ValueError):
    """A reference catalogue file that cannot be used (its name and the reason are in the message)."""


def load_reference(folder: Path) -> Reference | None:
    """The reference catalogue of every ``*.csv`` in ``folder`` (None: none there)."""
    files = sorted(Path(folder).glob("*.csv")) if Path(folder).is_dir() else []
    if not files:
        return None
    tables = []
    for path in files:
        try:
            table = Table.read(path, format="ascii.csv")
        except Exception as err:  # astropy raises several kinds for malformed text
            raise ReferenceError(f"{path.name}: not a CSV table ({err})") from err
        if not {"ra", "dec"} <= set(table.colnames):
            raise ReferenceError(f"{path.name}: needs columns ra and dec (degrees), has {table.colnames}")
        tables.append(table)
    table = vstack(tables, join_type="outer") if len(tables) > 1 else tables[0]

    def column(name: str) -> np.ndarray:
        values = table[name]
        return np.asarray(values.filled(np.nan) if hasattr(values, "filled") else values, dtype=np.float64)

    return Reference(
        ra=column("ra"),
        dec=column("dec"),
        magnitudes={name: column(name) for name in table.colnames if name not in ("ra", "dec")},
    )
