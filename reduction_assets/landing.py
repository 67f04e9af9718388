"""The landing area: listing arrivals and routing them cheaply to a (night, instrument) partition."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from reduction_assets.fits.headers import OUTSIDE_LANDING, FrameRejected, normalise_header
from reduction_assets.fits.validate import FileState, read_primary_header
from reduction_assets.instruments import Registry

# Names transfer tools give files they are still writing (rsync, scp, browsers, our own store).
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", ".crdownload", "~")


def is_candidate(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(TEMPORARY_SUFFIXES)


def scan_landing(landing: Path) -> dict[str, FileState]:
    """Every candidate file below ``landing`` as {relative POSIX path: (size, mtime)}.

    Hidden files and folders and temporary transfer names are skipped: they are not arrivals yet.
    """
    found: dict[str, FileState] = {}
    if not landing.is_dir():
        return found
    for folder, dirs, files in os.walk(landing):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not is_candidate(name):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # removed while we looked; a later scan settles it
            if not path.is_file():
                continue
            found[path.relative_to(landing).as_posix()] = FileState(st.st_size, st.st_mtime_ns)
    return found


@dataclass(frozen=True)
class Route:
    instrument: str
    night: dt.date


def route_file(path: Path, registry: Registry) -> Route:
    """Night and instrument of a landing file from its primary header only (no data read).

    Raises :class:`FrameRejected` when the file cannot be routed (not FITS, unknown camera, no date).
    """
    info = normalise_header(read_primary_header(path), registry)
    return Route(info.instrument, info.night)


def resolve_in_landing(landing: Path, relative: str) -> Path:
    """The absolute path of a landing-relative name; refuses names that leave the landing area."""
    candidate = (landing / relative).resolve()
    root = landing.resolve()
    if candidate != root and root not in candidate.parents:
        raise FrameRejected(OUTSIDE_LANDING, f"{relative!r} is outside the landing area")
    return candidate
