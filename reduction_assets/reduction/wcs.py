"""World coordinates of reduced frames: the raw frame's WCS moved onto the trimmed imaging area."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from astropy.wcs import WCS, FITSFixedWarning


def trimmed_wcs_header(raw_header: Mapping, imaging: tuple[slice, slice]):
    """The celestial WCS, as header cards, of the imaging area ``imaging`` (rows, columns) of a raw
    frame whose header is ``raw_header``; None when the raw frame has no celestial WCS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(raw_header)
    if not wcs.has_celestial:
        return None
    return wcs.slice(imaging).to_header()


def sky_positions(wcs_header: Mapping, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (degrees) of 0-based pixel positions of the frame described by ``wcs_header``."""
    ra, dec = WCS(wcs_header).all_pix2world(x, y, 0)
    return np.asarray(ra), np.asarray(dec)
