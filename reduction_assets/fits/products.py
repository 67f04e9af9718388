"""Writing and reading the project's FITS products (multi-extension: SCI, ERR, DQ, tables)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from reduction_assets.fits.headers import ascii_text, card_text
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
        h[f"IMCMB{i:03d}"] = card_text(frame.name)
        h[f"ICSUM{i:03d}"] = frame.checksum
    for key, value in product.statistics.items():
        h[f"HIERARCH STAT {key.upper()}"] = value if np.isfinite(value) else "nan"
    inputs = Table(
        {"name": [ascii_text(f.name) for f in product.inputs],
         "checksum": [f.checksum for f in product.inputs],
         "date_obs": [f.date_obs for f in product.inputs],
         "exptime": np.array([f.exptime for f in product.inputs], dtype=np.float64)})
    return fits.HDUList([
        primary,
        fits.ImageHDU(product.data.astype(np.float32), name="SCI"),
        fits.ImageHDU(product.error.astype(np.float32), name="ERR"),
        fits.ImageHDU(product.dq.astype(np.uint16), name="DQ"),
        fits.BinTableHDU(inputs, name="INPUTS"),
    ])


def read_master(path: Path):
    """A master's SCI, ERR, DQ and exposure time as a :class:`reduction_assets.reduction.science.Master`."""
    from reduction_assets.reduction.science import Master

    with fits.open(path, memmap=False) as hdul:
        return Master(data=np.asarray(hdul["SCI"].data, dtype=np.float32),
                      error=np.asarray(hdul["ERR"].data, dtype=np.float32),
                      dq=np.asarray(hdul["DQ"].data, dtype=np.uint16),
                      exptime=float(hdul[0].header.get("EXPTIME", 0.0)))


# Keywords of the raw primary header that describe its data, not the observation.
_DATA_KEYWORDS = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE",
                  "BLANK", "CHECKSUM", "DATASUM"}


def reduced_hdul(
    raw_header: fits.Header,
    sci: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    sources: np.ndarray,
    wcs_header: fits.Header | None,
    provenance: dict[str, object],
) -> fits.HDUList:
    """A reduced frame: the raw observation header plus provenance, SCI (e-), ERR, DQ and CAT."""
    primary = fits.PrimaryHDU()
    for card in raw_header.cards:
        if card.keyword in _DATA_KEYWORDS or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        if wcs_header is not None and card.keyword in wcs_header:
            continue  # the WCS of the trimmed frame lives in SCI
        primary.header.append(card, end=True)
    for key, value in provenance.items():
        primary.header[key] = value
    sci_hdu = fits.ImageHDU(sci.astype(np.float32), name="SCI")
    if wcs_header is not None:
        sci_hdu.header.update(wcs_header)
    sci_hdu.header["BUNIT"] = "electron"
    err_hdu = fits.ImageHDU(err.astype(np.float32), name="ERR")
    err_hdu.header["BUNIT"] = "electron"
    dq_hdu = fits.ImageHDU(dq.astype(np.uint16), name="DQ")
    dq_hdu.header["COMMENT"] = ("DQ bits: 1 no data, 2 low count, 4 hot, 8 low response, "
                                "16 high response, 32 saturated, 64 bad pixel, 128 cosmic ray")
    cat_hdu = fits.BinTableHDU(Table(sources), name="CAT")
    cat_hdu.header["COMMENT"] = ("x, y: 0-based pixels of SCI; flux, flux_err: e- in a circular "
                                 "aperture; fwhm: pixels; flag: sep flags, 256 = saturated")
    return fits.HDUList([primary, sci_hdu, err_hdu, dq_hdu, cat_hdu])
