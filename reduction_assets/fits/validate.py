"""File-level checks of raw FITS files: is it whole, is it FITS, does it match its instrument."""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from reduction_assets.fits.headers import (
    BAD_HEADER,
    COMPRESSED,
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
from reduction_assets.support.checksums import sha256_of

BLOCK = 2880


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int

    @staticmethod
    def of(path: Path) -> FileState:
        try:
            st = os.stat(path)
        except FileNotFoundError as err:
            raise FrameRejected(VANISHED, f"{path.name} is no longer in the landing area") from err
        return FileState(st.st_size, st.st_mtime_ns)

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self.mtime_ns / 1e9 >= settle_seconds


# Magic numbers of whole-file compressors: such files are FITS only after decompression.
_COMPRESSORS = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"PK\x03\x04": "zip"}
_MAX_HEADER_BLOCKS = 1000  # 36,000 cards: no real primary header is longer
_BITPIX = {8, 16, 32, 64, -32, -64}


def _header_bytes(handle, name: str) -> bytes:
    """The raw bytes of the primary header, up to and including its END card."""
    handle.seek(0)
    chunks = []
    for _ in range(_MAX_HEADER_BLOCKS):
        block = handle.read(BLOCK)
        if len(block) < BLOCK:
            raise FrameRejected(TRUNCATED, f"{name}: the primary header ends before its END card")
        chunks.append(block)
        for i in range(0, BLOCK, 80):
            if block[i : i + 8] == b"END     ":
                return b"".join(chunks)
    raise FrameRejected(BAD_HEADER, f"{name}: no END card in the first {_MAX_HEADER_BLOCKS} header blocks")


def _check_ascii(raw: bytes, name: str) -> None:
    for index, byte in enumerate(raw):
        if not 0x20 <= byte <= 0x7E:
            card = raw[index - index % 80 :][:8].decode("ascii", "replace").strip()
            raise FrameRejected(
                BAD_HEADER,
                f"{name}: byte 0x{byte:02x} in header card {index // 80 + 1} "
                f"({card or 'no keyword'}) is not printable ASCII, as FITS requires",
            )


def check_structure(header: fits.Header, name: str) -> tuple[int, ...]:
    """The data axes (NAXIS1, NAXIS2, ...) after checking the structural keywords are coherent.

    Raises :class:`FrameRejected` (``bad_header``) for a BITPIX or NAXIS that no reader can honour.
    """
    try:
        bitpix = int(header["BITPIX"])
        naxis = int(header["NAXIS"])
        if bitpix not in _BITPIX:
            raise ValueError(f"BITPIX = {bitpix} is not one of {sorted(_BITPIX)}")
        if not 0 <= naxis <= 999:
            raise ValueError(f"NAXIS = {naxis} is outside 0..999")
        axes = []
        for axis in range(1, naxis + 1):
            if f"NAXIS{axis}" not in header:
                raise ValueError(f"NAXIS = {naxis} but NAXIS{axis} is missing")
            length = int(header[f"NAXIS{axis}"])
            if length < 0:
                raise ValueError(f"NAXIS{axis} = {length} is negative")
            axes.append(length)
    except (KeyError, ValueError, TypeError) as err:
        message = err.args[0] if isinstance(err, ValueError) and err.args else str(err)
        raise FrameRejected(BAD_HEADER, f"{name}: {message}") from err
    return tuple(axes)


def read_primary_header(path: Path) -> fits.Header:
    """Read only the primary header (cheap: no data is read); raises :class:`FrameRejected`.

    Every way a header can be unreadable ends as a reason code: compressed files, non-ASCII bytes,
    structural keywords that contradict each other, a header cut short.
    """
    try:
        with open(path, "rb") as handle:
            start = handle.read(BLOCK)
            if not start:
                raise FrameRejected(EMPTY_FILE, f"{path.name} is empty (0 bytes)")
            for magic, compressor in _COMPRESSORS.items():
                if start.startswith(magic):
                    raise FrameRejected(
                        COMPRESSED, f"{path.name} is {compressor}-compressed: deliver it uncompressed"
                    )
            if not start.startswith(b"SIMPLE  =") or start[29:30] != b"T":
                raise FrameRejected(NOT_FITS, f"{path.name} does not start with a FITS 'SIMPLE = T' card")
            raw = _header_bytes(handle, path.name)
    except FileNotFoundError as err:
        raise FrameRejected(VANISHED, f"{path.name} is no longer in the landing area") from err
    except OSError as err:
        raise FrameRejected(UNREADABLE, f"cannot read {path.name}: {err.strerror}") from err
    _check_ascii(raw, path.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            header = fits.Header.fromstring(raw.decode("ascii"))
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise FrameRejected(BAD_HEADER, f"{path.name}: the primary header cannot be parsed ({err})") from err
    axes = check_structure(header, path.name)
    if not axes and header.get("EXTEND") and _is_tile_compressed(path):
        raise FrameRejected(
            COMPRESSED, f"{path.name} is tile-compressed FITS (fpack): deliver it uncompressed (funpack)"
        )
    return header


def _is_tile_compressed(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(path, memmap=False, disable_image_compression=True) as hdul:
                return len(hdul) > 1 and bool(hdul[1].header.get("ZIMAGE", False))
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError):
        return False


def expected_file_size(header: fits.Header) -> int:
    """Bytes the primary HDU occupies: header blocks plus padded data (structure already checked)."""
    header_bytes = len(header.tostring()) if header is not None else 0
    header_bytes = -(-header_bytes // BLOCK) * BLOCK
    axes = check_structure(header, "header")
    if not axes:
        return header_bytes
    data_bytes = abs(int(header["BITPIX"])) // 8 * math.prod(axes)
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
        raise FrameRejected(
            STILL_BEING_WRITTEN, f"{path.name} was modified less than {settle_seconds:g} s ago"
        )
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
            f"{instrument.name} (expected {instrument.expected_shapes(info.binning)})",
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
