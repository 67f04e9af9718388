"""Writing and reading the project's FITS products (multi-extension: SCI, ERR, DQ, tables)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from reduction_assets.reduction.masters import MasterProduct


def master_hdul(
    product: MasterProduct,
    *,
    instrument: str,
    night: dt.date,
    binning: str,
    filter: str,
    fingerprint: str,
    software_version: str,
    calibrations_used: dict[str, str],
) -> fits.HDUList:
    """A master as FITS: primary header with provenance, SCI, ERR, DQ and an INPUTS table."""
    primary = fits.PrimaryHDU()
    h = primary.header
    h["CALTYPE"] = (product.kind.upper(), "master calibration type")
    h["INSTRUME"] = instrument
    h["NIGHT"] = (night.isoformat(), "local date at the noon before")
    h["BINNING"] = binning
    if filter:
        h["FILTER"] = filter
    if product.exptime is not None:
        h["EXPTIME"] = (product.exptime, "[s] applies at this time only")
    h["BUNIT"] = {"bias": "electron", "dark": "electron" if product.exptime else "electron/s",
                  "flat": ""}[product.kind]
    h["NCOMBINE"] = (len(product.inputs), "frames combined")
    h["SOFTVER"] = (software_version, "reduction_assets version")
    h["FINGERPR"] = fingerprint  # sha256 of inputs, calibrations, settings, version
    for key, value in calibrations_used.items():
        h[key] = value
    for i, frame in enumerate(product.inputs, start=1):
        h[f"IMCMB{i:03d}"] = frame.name[-68:]
        h[f"ICSUM{i:03d}"] = frame.checksum
    for key, value in product.statistics.items():
        h[f"HIERARCH STAT {key.upper()}"] = value if np.isfinite(value) else "nan"
    inputs = Table(
        {"name": [f.name for f in product.inputs], "checksum": [f.checksum for f in product.inputs],
         "date_obs": [f.date_obs for f in product.inputs],
         "exptime": np.array([f.exptime for f in product.inputs], dtype=np.float64)})
    return fits.HDUList([
        primary,
        fits.ImageHDU(product.data.astype(np.float32), name="SCI"),
        fits.ImageHDU(product.error.astype(np.float32), name="ERR"),
        fits.ImageHDU(product.dq.astype(np.uint16), name="DQ"),
        fits.BinTableHDU(inputs, name="INPUTS"),
    ])


def read_sci(path: Path) -> np.ndarray:
    """The SCI extension as float32."""
    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul["SCI"].data, dtype=np.float32)
