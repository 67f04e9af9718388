"""Writing the project's FITS products (multi-extension: SCI, ERR, DQ, tables), with one family of
provenance keywords for masters and reduced frames alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import BinaryIO

import numpy as np
from astropy.io import fits
from astropy.table import Table

from reduction_assets.fits.headers import ascii_text, card_text
from reduction_assets.reduction.dq import describe_bits
from reduction_assets.reduction.masters import MasterProduct
from reduction_assets.support.provenance import UsedCalibration


def provenance_cards(
    *,
    software_version: str,
    step_version: str,
    fingerprint: str,
    night: dt.date,
    used: Mapping[str, UsedCalibration],
) -> dict[str, object]:
    """The provenance keywords of every product: versions, fingerprint, and per master used
    ``{TAG}ID`` (catalog id), ``{TAG}FILE`` (its file name) and ``{TAG}AGE`` (nights older than the
    product's night), TAG being the master's role in ``used`` (BIAS, DARK, FLAT; ZERO for the dark
    that gives flats of bias-less cameras their pedestal; DK1, DK2... for the darks of a pedestal
    fit)."""
    cards: dict[str, object] = {
        "SOFTVER": (software_version, "reduction_assets version"),
        "STEPVER": (step_version, "version of the step that made this product"),
        "FINGERPR": fingerprint,  # sha256 of inputs, masters, settings and step: no room for a comment
    }
    for role, calibration in used.items():
        tag = role.upper()[:4]
        cards[f"{tag}ID"] = (calibration.id, f"catalog id of the master {calibration.kind}")
        cards[f"{tag}FILE"] = card_text(PurePosixPath(calibration.key).name)
        cards[f"{tag}AGE"] = (
            (night - calibration.night).days,
            f"nights between product and master {calibration.kind}",
        )
    return cards


def master_hdul(
    product: MasterProduct,
    *,
    instrument: str,
    night: dt.date,
    binning: str,
    filter: str,
    provenance: Mapping[str, object],
) -> fits.HDUList:
    """A master as FITS: primary header with provenance, SCI, ERR, DQ and an INPUTS table."""
    master = product.master
    primary = fits.PrimaryHDU()
    h = primary.header
    h["CALTYPE"] = (product.kind.upper(), "master calibration type")
    h["INSTRUME"] = instrument
    h["NIGHT"] = (night.isoformat(), "local date at the noon before")
    h["BINNING"] = binning
    if filter:
        h["FILTER"] = filter
    if master.exptime:
        h["EXPTIME"] = (master.exptime, "[s] applies at this time only")
    h["BUNIT"] = {"bias": "electron", "dark": "electron" if master.exptime else "electron/s", "flat": ""}[
        product.kind
    ]
    h["NCOMBINE"] = (len(product.inputs), "frames combined")
    for key, value in provenance.items():
        h[key] = value
    for i, frame in enumerate(product.inputs, start=1):
        h[f"IMCMB{i:03d}"] = card_text(frame.name)
        h[f"ICSUM{i:03d}"] = frame.checksum
    for key, value in product.statistics.items():
        h[f"HIERARCH STAT {key.upper()}"] = value if np.isfinite(value) else "nan"
    inputs = Table(
        {
            "name": [ascii_text(f.name) for f in product.inputs],
            "checksum": [f.checksum for f in product.inputs],
            "date_obs": [f.date_obs for f in product.inputs],
            "exptime": np.array([f.exptime for f in product.inputs], dtype=np.float64),
        }
    )
    return fits.HDUList(
        [
            primary,
            fits.ImageHDU(master.data.astype(np.float32), name="SCI"),
            fits.ImageHDU(master.error.astype(np.float32), name="ERR"),
            _dq_hdu(master.dq),
            fits.BinTableHDU(inputs, name="INPUTS"),
        ]
    )


# Keywords of the raw header that describe the raw readout: a reduced frame is trimmed and in
# electrons, so they are rewritten for it and the raw values kept under these names.
RAW_READOUT_NAMES = {
    "GAIN": "RAWGAIN",
    "SATURATE": "RAWSATUR",
    "BIASSEC": "RAWBSEC",
    "TRIMSEC": "RAWTSEC",
    "DATASEC": "RAWDSEC",
}


def readout_cards(gain_keyword: str, image_shape: tuple[int, int], saturation_e: float) -> dict[str, object]:
    """The readout keywords of a reduced frame (SCI trimmed, in electrons): gain 1, saturation in
    electrons, the whole image as DATASEC, and no BIASSEC or TRIMSEC."""
    ny, nx = image_shape
    cards: dict[str, object] = {
        "GAIN": (1.0, "[e-/e-] SCI, ERR in electrons"),
        "SATURATE": (round(saturation_e, 1), "[e-] raw saturation above bias, unflat"),
        "DATASEC": (f"[1:{nx},1:{ny}]", "imaging area, trimmed"),
    }
    if gain_keyword != "GAIN":
        cards[gain_keyword] = cards["GAIN"]
    return cards


# Keywords of the raw primary header that describe its data, not the observation.
_DATA_KEYWORDS = {
    "SIMPLE",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "EXTEND",
    "BZERO",
    "BSCALE",
    "BLANK",
    "CHECKSUM",
    "DATASUM",
}


def reduced_hdul(
    raw_header: fits.Header,
    sci: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    sources: np.ndarray,
    wcs_header: fits.Header | None,
    provenance: Mapping[str, object],
    readout: Mapping[str, object],
) -> fits.HDUList:
    """A reduced frame: the raw observation header plus provenance, SCI (e-), ERR, DQ and CAT.

    Raw readout keywords (:data:`RAW_READOUT_NAMES`, and the camera's own gain keyword among
    ``readout``) keep their raw values under raw names; ``readout`` (:func:`readout_cards`) gives the
    product's own."""
    primary = fits.PrimaryHDU()
    renamed = {**RAW_READOUT_NAMES, **{key: "RAWGAIN" for key in readout if key not in RAW_READOUT_NAMES}}
    for card in raw_header.cards:
        if card.keyword in _DATA_KEYWORDS or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        if wcs_header is not None and card.keyword in wcs_header:
            continue  # the WCS of the trimmed frame lives in SCI
        if card.keyword in renamed:
            primary.header[renamed[card.keyword]] = (card.value, f"raw: {card.comment}"[:40])
            continue
        primary.header.append(card, end=True)
    for key, value in {**readout, **provenance}.items():
        primary.header[key] = value
    sci_hdu = fits.ImageHDU(sci.astype(np.float32), name="SCI")
    if wcs_header is not None:
        sci_hdu.header.update(wcs_header)
    sci_hdu.header["BUNIT"] = "electron"
    err_hdu = fits.ImageHDU(err.astype(np.float32), name="ERR")
    err_hdu.header["BUNIT"] = "electron"
    cat_hdu = fits.BinTableHDU(Table(sources), name="CAT")
    cat_hdu.header["COMMENT"] = (
        "x, y: 0-based pixels of SCI; flux, flux_err: e- in a circular "
        "aperture; fwhm: pixels; flag: sep flags, 256 = saturated, 512 = cosmic-ray "
        "pixels in the aperture filled from their neighbours"
    )
    return fits.HDUList([primary, sci_hdu, err_hdu, _dq_hdu(dq), cat_hdu])


def _dq_hdu(dq: np.ndarray) -> fits.ImageHDU:
    hdu = fits.ImageHDU(dq.astype(np.uint16), name="DQ")
    hdu.header["COMMENT"] = "DQ bits: " + describe_bits()
    return hdu


DATASUM_COMMENT = "data unit checksum"
CHECKSUM_COMMENT = "HDU checksum"


def write_hdul(hdul: fits.HDUList, stream: BinaryIO) -> None:
    """Write a product to a binary stream, with FITS CHECKSUM/DATASUM cards.

    The cards' comments carry no time (astropy's default says when the sum was made), so the same
    product made twice, in process or on another machine, is the same bytes: products are
    compared, deduplicated and archived by their SHA-256."""
    for hdu in hdul:
        hdu.add_datasum(when=DATASUM_COMMENT)
        hdu.add_checksum(when=CHECKSUM_COMMENT, override_datasum=True)
    hdul.writeto(stream, checksum=False)
