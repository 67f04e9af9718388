"""The landing area: listing arrivals and routing them cheaply to a (night, instrument) partition.

Names are landing-relative POSIX paths as the operating system gives them; a name that is not valid
UTF-8 carries its undecodable bytes as surrogates (Python's ``surrogateescape``). Such names travel
through run configuration as :func:`encode_name` strings and are stored and shown as
:func:`reduction_assets.fits.headers.shown` gives them.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reduction_assets.fits.headers import (
    NOT_A_REGULAR_FILE,
    OUTSIDE_LANDING,
    FrameRejected,
    normalise_header,
    shown,
)
from reduction_assets.fits.validate import FileState, read_primary_header
from reduction_assets.instruments import Registry

# Names transfer tools give files they are still writing (rsync, scp, browsers, our own store).
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".filepart", ".crdownload", "~")

# Why a landing entry is not an arrival (listed by `reduction-assets quarantine --ignored`).
IGNORED_HIDDEN = "hidden"
IGNORED_TEMPORARY = "temporary_name"
IGNORED_NOT_A_FILE = NOT_A_REGULAR_FILE

# Run configuration is stored as JSON text: a name with undecodable bytes is sent as their hex,
# behind a prefix no landing-relative name can have (they never start with "/").
_BYTES_PREFIX = "/bytes:"


def encode_name(name: str) -> str:
    """A landing name as plain text (JSON, run config, databases); reversed by :func:`decode_name`."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return _BYTES_PREFIX + os.fsencode(name).hex()
    return name


def decode_name(text: str) -> str:
    if text.startswith(_BYTES_PREFIX):
        return os.fsdecode(bytes.fromhex(text[len(_BYTES_PREFIX) :]))
    return text


def ignored_reason(name: str) -> str | None:
    """Why a file name is not an arrival yet, or None when it is one."""
    if name.startswith("."):
        return IGNORED_HIDDEN
    if name.endswith(TEMPORARY_SUFFIXES):
        return IGNORED_TEMPORARY
    return None


@dataclass(frozen=True)
class IgnoredEntry:
    """A landing entry that is not ingested, and why: operators look for stuck transfers here."""

    name: str
    reason: str
    size: int
    mtime_ns: int


@dataclass
class LandingScan:
    """What is in landing/: arrivals to consider, and entries skipped with a reason."""

    files: dict[str, FileState] = field(default_factory=dict)
    ignored: list[IgnoredEntry] = field(default_factory=list)


def scan_landing(landing: Path) -> LandingScan:
    """Every entry below ``landing``: regular files (and symbolic links, which ingestion checks) as
    {relative POSIX path: (size, mtime)}, and everything else with the reason it is skipped: hidden
    files and folders, temporary transfer names, FIFOs, sockets and devices. Nothing is opened.
    """
    scan = LandingScan()
    if not landing.is_dir():
        return scan
    for folder, dirs, files in os.walk(landing):
        hidden_dirs = sorted(d for d in dirs if d.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in hidden_dirs:
            _ignore(scan, landing, Path(folder) / name, IGNORED_HIDDEN)
        for name in sorted(files):
            path = Path(folder) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue  # removed while we looked; a later scan settles it
            reason = ignored_reason(name)
            if reason is None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                reason = IGNORED_NOT_A_FILE
            if reason is not None:
                _ignore(scan, landing, path, reason, st)
                continue
            scan.files[path.relative_to(landing).as_posix()] = FileState(st.st_size, st.st_mtime_ns)
    return scan


def _ignore(scan: LandingScan, landing: Path, path: Path, reason: str, st=None) -> None:
    try:
        st = st or path.lstat()
    except FileNotFoundError:
        return
    scan.ignored.append(
        IgnoredEntry(path.relative_to(landing).as_posix(), reason, st.st_size, st.st_mtime_ns)
    )


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
    """The absolute path of a landing-relative name; refuses names that leave the landing area
    (``..``, or a symbolic link whose target is outside) and links to anything but a regular file
    (a FIFO would block the reader forever) before anything is read from them."""
    candidate = (landing / relative).resolve()
    root = landing.resolve()
    if candidate != root and root not in candidate.parents:
        raise FrameRejected(OUTSIDE_LANDING, f"{shown(relative)!r} is outside the landing area")
    try:
        mode = candidate.stat().st_mode
    except FileNotFoundError:
        return candidate  # reported as vanished by whoever opens it
    if not stat.S_ISREG(mode):
        raise FrameRejected(
            NOT_A_REGULAR_FILE, f"{shown(relative)!r} leads to a FIFO, socket, device or folder, not a file"
        )
    return candidate


def route_landing_file(landing: Path, relative: str, registry: Registry) -> Route:
    """:func:`route_file` of a landing-relative name, refused first if it leads outside landing/."""
    return route_file(resolve_in_landing(landing, relative), registry)


# (size_bytes, mtime_ns, instrument, night) of a routed file version, as the catalog remembers it.
KnownRoute = tuple[int, int, str | None, dt.date | None]


def route_with_index(
    files: dict[str, FileState],
    known: dict[str, KnownRoute],
    route: Callable[[str], Route],
) -> tuple[dict[str, Route | None], dict[str, KnownRoute]]:
    """Where each landing file belongs (None: no partition), opening only the headers of file
    versions ``known`` (by encoded name) does not hold; returns the routes and the new entries
    to remember."""
    routes: dict[str, Route | None] = {}
    new: dict[str, KnownRoute] = {}
    for name, state in files.items():
        entry = known.get(encode_name(name))
        if entry is not None and (entry[0], entry[1]) == (state.size, state.mtime_ns):
            routes[name] = Route(entry[2], entry[3]) if entry[2] is not None else None
            continue
        try:
            found: Route | None = route(name)
        except FrameRejected:
            found = None
        routes[name] = found
        new[encode_name(name)] = (
            state.size,
            state.mtime_ns,
            found.instrument if found else None,
            found.night if found else None,
        )
    return routes, new
