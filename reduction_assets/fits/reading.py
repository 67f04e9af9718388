"""Reading FITS images from files, streams and stores: whole frames, row blocks and masters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from astropy.io import fits

from reduction_assets.kernels import CombineResult, combine_blocks
from reduction_assets.reduction.masters import InputFrame, Master
from reduction_assets.storage import ObjectStore

Source = Path | str | BinaryIO


def read_image(source: Source, hdu: int | str = 0) -> tuple[fits.Header, np.ndarray]:
    """Header and pixels (float32, BSCALE/BZERO applied) of one image HDU."""
    with fits.open(source, memmap=False) as hdul:
        return hdul[hdu].header.copy(), np.asarray(hdul[hdu].data, dtype=np.float32)


def read_rows(source: Source, first: int, stop: int, hdu: int | str = 0) -> np.ndarray:
    """Rows ``first:stop`` of an image HDU as float32 (BSCALE/BZERO applied, BLANK as NaN).

    The file is memory-mapped and unmapped again on return. astropy refuses to memory-map scaled
    integer images, so the scaling (which is exact in float32 for 16-bit data) is applied here.
    """
    with fits.open(source, memmap=True, do_not_scale_image_data=True) as hdul:
        image = hdul[hdu]
        header = image.header
        rows = np.array(image.section[first:stop])
    values = rows.astype(np.float32)
    if rows.dtype.kind in "iu" and "BLANK" in header:
        values[rows == header["BLANK"]] = np.nan
    bscale = header.get("BSCALE", 1.0)
    bzero = header.get("BZERO", 0.0)
    if bscale != 1.0:
        values *= np.float32(bscale)
    if bzero != 0.0:
        values += np.float32(bzero)
    return values


def image_shape(source: Source, hdu: int | str = 0) -> tuple[int, int]:
    header = fits.getheader(source, hdu)
    return int(header["NAXIS2"]), int(header["NAXIS1"])


def read_master(source: Source) -> Master:
    """A master product's SCI, ERR, DQ and the exposure time it applies to (0: any)."""
    with fits.open(source, memmap=False) as hdul:
        return Master(
            data=np.asarray(hdul["SCI"].data, dtype=np.float32),
            error=np.asarray(hdul["ERR"].data, dtype=np.float32),
            dq=np.asarray(hdul["DQ"].data, dtype=np.uint16),
            exptime=float(hdul[0].header.get("EXPTIME", 0.0)),
        )


class StoreFrameReader:
    """The :class:`reduction_assets.reduction.masters.FrameReader` of raw frames in a store."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def read(self, frame: InputFrame) -> np.ndarray:
        with self.store.open(frame.key) as stream:
            return read_image(stream)[1]

    def read_rows(self, frame: InputFrame, first: int, stop: int) -> np.ndarray:
        with self.store.open(frame.key) as stream:
            return read_rows(stream, first, stop)


def combine_files(
    paths: Sequence[Path],
    method: str,
    *,
    hdu: int | str = 0,
    memory_budget: int = 1 << 30,
    **combine_options,
) -> CombineResult:
    """Combine FITS images from local files in row blocks within ``memory_budget`` bytes
    (``combine_options`` are those of :func:`reduction_assets.kernels.combine`).

    All images must have the same shape; raises ValueError naming the first that does not.
    """
    if not paths:
        raise ValueError("no files to combine")
    shape = image_shape(paths[0], hdu)
    for path in paths[1:]:
        other = image_shape(path, hdu)
        if other != shape:
            raise ValueError(f"{Path(path).name} has shape {other}, {Path(paths[0]).name} has {shape}")
    return combine_blocks(
        lambda k, r0, r1: read_rows(paths[k], r0, r1, hdu),
        len(paths),
        shape,
        method,
        memory_budget=memory_budget,
        **combine_options,
    )
