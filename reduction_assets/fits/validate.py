"""File-level checks of raw FITS files: is it whole, is it FITS, does it match its instrument."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from reduction_assets.fits.headers import (
    EMPTY_FILE,
    NOT_FITS,
    SHAPE_MISMATCH,
    STILL_BEING_WRITTEN,
    TRUNCATED,
    UNREADABLE,
    VANISHED,
    FrameInfo,
    FrameRejected,
    normalise_header,
)
from reduction_assets.instruments import Registry

BLOCK = 2880
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int

    @staticmethod
    def of(path: Path) -> "FileState":
        try:
            st = os.stat(path)
        except FileNotFoundError as err:
            raise FrameRejected(VANISHED, f"{path.name} is no longer in the landing area") from err
        return FileState(st.st_size, st.st_mtime_ns)

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self.mtime_ns / 1e9 >= settle_seconds


def read_primary_header(path: Path) -> fits.Header:
    """Read only the primary header (cheap: no data is read); raises :class:`FrameRejected`."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(BLOCK)
    except FileNotFoundError as err:
        raise FrameRejected(VANISHED, f"{path.name} is no longer in the landing area") from err
    except OSError as err:
        raise FrameRejected(UNREADABLE, f"cannot read {path.name}: {err.strerror}") from err
    if not start:
        raise FrameRejected(EMPTY_FILE, f"{path.name} is empty (0 bytes)")
    if not start.startswith(b"SIMPLE  =") or start[29:30] != b"T":
        raise FrameRejected(NOT_FITS, f"{path.name} does not start with a FITS 'SIMPLE = T' card")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            return fits.getheader(path, 0)
    except (OSError, ValueError, EOFError) as err:
        raise FrameRejected(TRUNCATED, f"{path.name}: primary header cannot be read ({err})") from err


def expected_file_size(header: fits.Header) -> int:
    """Bytes the primary HDU occupies: header blocks plus padded data."""
    header_bytes = len(header.tostring()) if header is not None else 0
    header_bytes = -(-header_bytes // BLOCK) * BLOCK
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return header_bytes
    n = 1
    for axis in range(1, naxis + 1):
        n *= int(header[f"NAXIS{axis}"])
    data_bytes = abs(int(header["BITPIX"])) // 8 * n
    return header_bytes + -(-data_bytes // BLOCK) * BLOCK


@dataclass(frozen=True)
class ValidatedFrame:
    path: Path
    info: FrameInfo
    header: fits.Header
    checksum: str
    state: FileState


def validate_raw_file(path: Path, registry: Registry, *, settle_seconds: float = 0.0) -> ValidatedFrame:
    """Check one landing file completely and return what the catalog needs.

    Raises :class:`FrameRejected` with a reason code for every way a file can be bad. A file modified
    less than ``settle_seconds`` ago, or whose size changes while it is read, is reported as
    ``still_being_written`` (a transient reason: it will be tried again once it settles).
    """
    before = FileState.of(path)
    if before.size == 0:
        raise FrameRejected(EMPTY_FILE, f"{path.name} is empty (0 bytes)")
    if not before.settled(settle_seconds):
        raise FrameRejected(STILL_BEING_WRITTEN, f"{path.name} was modified less than "
                            f"{settle_seconds:g} s ago")
    header = read_primary_header(path)
    expected = expected_file_size(header)
    if before.size < expected:
        raise FrameRejected(
            TRUNCATED, f"{path.name} has {before.size} bytes; its header describes {expected}"
        )
    info = normalise_header(header, registry)
    instrument = registry[info.instrument]
    if info.shape is None or instrument.geometry(info.shape, info.binning) is None:
        raise FrameRejected(
            SHAPE_MISMATCH,
            f"{path.name}: data shape {info.shape} with binning {info.binning_label} does not match "
            f"{instrument.name} (expected one of {instrument.expected_shapes(info.binning)})",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(path, memmap=False) as hdul:
                data = hdul[0].data
                if data is None or data.shape != info.shape:
                    raise FrameRejected(TRUNCATED, f"{path.name}: primary data cannot be read whole")
                # Reading the data is the real truncation test; its values are checked later, by
                # the science steps, not here.
                np.asarray(data[-1])
    except (OSError, ValueError, AstropyUserWarning, TypeError) as err:
        raise FrameRejected(TRUNCATED, f"{path.name}: data cannot be read ({err})") from err
    checksum = sha256_of(path)
    after = FileState.of(path)
    if after != before:
        raise FrameRejected(STILL_BEING_WRITTEN, f"{path.name} changed while it was being read")
    return ValidatedFrame(path=path, info=info, header=header, checksum=checksum, state=before)
