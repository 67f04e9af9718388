"""Store keys: the one place that names stored objects, deterministically (as PypeIt names its
calibrations: from type, setup and date), from sanitised values only."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from reduction_assets.fits.headers import FrameInfo, sanitise
from reduction_assets.instruments import CalibrationKey


@dataclass(frozen=True, order=True)
class NightPartition:
    """One night x instrument partition. Its text, ``instrument|night``, is Dagster's key of the
    multi-partition (dimensions ordered by name); this is the one place that writes and reads it."""

    instrument: str
    night: dt.date

    @property
    def key(self) -> str:
        return f"{self.instrument}|{self.night.isoformat()}"

    @classmethod
    def parse(cls, key: str) -> NightPartition:
        # The night is an ISO date, so the last bar separates it whatever the instrument is called.
        instrument, bar, night = key.rpartition("|")
        try:
            day = dt.date.fromisoformat(night)
            if not (bar and instrument) or day.isoformat() != night:  # 20261120 is a date, not a key
                raise ValueError("not instrument|YYYY-MM-DD")
            return cls(instrument, day)
        except ValueError as err:
            raise ValueError(f"{key!r} is not a partition key instrument|YYYY-MM-DD") from err


def raw_name(info: FrameInfo, checksum: str) -> str:
    """``lcosim_20261120_science_rp_M_74_20261121T013000_<sha12>.fits``"""
    parts = [info.instrument, info.night.strftime("%Y%m%d"), info.frame_type]
    if info.filter:
        parts.append(sanitise(info.filter, max_length=16))
    if info.object and info.frame_type == "science":
        parts.append(sanitise(info.object, max_length=32))
    parts.append(info.date_obs.strftime("%Y%m%dT%H%M%S"))
    parts.append(checksum[:12])
    return "_".join(parts) + ".fits"


def raw_key(info: FrameInfo, checksum: str) -> str:
    """Key of a raw frame in the raw store: ``<instrument>/<night>/<raw_name>``."""
    return f"{info.instrument}/{info.night.isoformat()}/{raw_name(info, checksum)}"


def master_key(instrument: str, night: dt.date, key: CalibrationKey) -> str:
    """Key of a master in the product store: ``masters/<instrument>/<night>/<name>.fits``."""
    parts = [instrument, night.strftime("%Y%m%d"), key.type, key.binning, key.readout]
    if key.filter:
        parts.append(sanitise(key.filter, max_length=16))
    if key.exptime:
        parts.append(f"{key.exptime:g}s")
    return f"masters/{instrument}/{night.isoformat()}/{'_'.join(parts)}.fits"


def reduced_key(instrument: str, night: dt.date, raw_key: str) -> str:
    """Key of a reduced frame: ``reduced/<instrument>/<night>/<raw stem>_red.fits``."""
    return f"reduced/{instrument}/{night.isoformat()}/{PurePosixPath(raw_key).stem}_red.fits"


def stack_key(
    instrument: str, night: dt.date, group_key: str, target: str, filter_name: str, binning: str
) -> str:
    """Key of a stack:
    ``stacks/<instrument>/<night>/<instrument>_<night>_<target>_<filter>_<binning>_<h8>.fits``; the
    target is sanitised (any name is safe as a path) and ``h8`` (a hash of the group key) keeps
    names apart that sanitise alike."""
    digest = hashlib.sha256(group_key.encode()).hexdigest()[:8]
    parts = [instrument, night.strftime("%Y%m%d"), sanitise(target, max_length=32)]
    if filter_name:
        parts.append(sanitise(filter_name, max_length=16))
    parts += [sanitise(binning, max_length=8), digest]
    return f"stacks/{instrument}/{night.isoformat()}/{'_'.join(parts)}.fits"


# The reduction levels of the archive, lowest first: the first part of every archive key.
ARCHIVE_LEVELS = ("raw", "master", "reduced", "stack")


def archive_key(level: str, instrument: str, night: dt.date, version: int, name: str) -> str:
    """Key of an archived file: ``<level>/<instrument>/<night>/v<version>/<name>`` (versions side
    by side, the file's name intact)."""
    if level not in ARCHIVE_LEVELS:
        raise ValueError(f"archive level {level!r}: expected one of {', '.join(ARCHIVE_LEVELS)}")
    return f"{level}/{instrument}/{night.isoformat()}/v{version}/{name}"


# Plots live under this prefix of the product store: drawn again from the catalog whenever wanted,
# they have no catalog row of their own (verify leaves them alone).
QUALITY_PREFIX = "quality/"


def quality_plot_key(instrument: str, night: dt.date, name: str) -> str:
    """Key of a night's quality plot:
    ``quality/<instrument>/<night>/<instrument>_<night>_<name>.png``."""
    stem = f"{instrument}_{night.strftime('%Y%m%d')}_{name}"
    return f"{QUALITY_PREFIX}{instrument}/{night.isoformat()}/{stem}.png"


def trend_plot_key(instrument: str, metric: str) -> str:
    """Key of a metric's trend plot: ``quality/trends/<instrument>/<instrument>_<metric>.png``."""
    return f"{QUALITY_PREFIX}trends/{instrument}/{instrument}_{metric}.png"
