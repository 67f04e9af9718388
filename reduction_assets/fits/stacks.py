"""Stacks as FITS: SCI, ERR, DQ, EXPMAP, NIMAGES, CAT and MEMBERS, with the grid's WCS on every image."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from reduction_assets.fits.headers import card_text
from reduction_assets.reduction.dq import describe_bits
from reduction_assets.reduction.stacking import StackImage

MEMBER_COLUMNS = ("file", "included", "weight", "scale", "background_offset", "wcs_offset_arcsec", "reason")


def stack_hdul(
    image: StackImage,
    wcs_header: fits.Header,
    sources: np.ndarray,
    members: Sequence[Mapping[str, object]],
    *,
    instrument: str,
    night: dt.date,
    target: str,
    filter_name: str,
    binning: str,
    exptime: float,
    provenance: Mapping[str, object],
) -> fits.HDUList:
    """A stack: primary header (what, when, provenance, one IMCMBnnn card per member used), SCI and
    ERR (e- at the reference exposure ``exptime`` s), DQ, EXPMAP (s), NIMAGES, CAT (sep sources on
    SCI) and MEMBERS (every frame of the group, used or left out, with weight, scale and reason)."""
    primary = fits.PrimaryHDU()
    header = primary.header
    header["INSTRUME"] = instrument
    header["DAY-OBS"] = (night.isoformat(), "night of observation (local date at its start)")
    header["OBJECT"] = card_text(target)
    header["FILTER"] = filter_name or "none"
    header["CCDSUM"] = (binning, "binning of the members")
    header["EXPTIME"] = (exptime, "s, the reference exposure SCI refers to")
    header["NCOMBINE"] = (sum(1 for m in members if m["included"]), "members in the stack")
    for key, value in provenance.items():
        header[key] = value
    used = [m for m in members if m["included"]]
    for k, member in enumerate(used[:999], start=1):
        header[f"IMCMB{k:03d}"] = card_text(str(member["file"]))
    images = []
    for name, data, unit in (
        ("SCI", image.sci.astype(np.float32), "electron"),
        ("ERR", image.err.astype(np.float32), "electron"),
        ("DQ", image.dq.astype(np.uint16), None),
        ("EXPMAP", image.exposure.astype(np.float32), "s"),
        ("NIMAGES", image.count.astype(np.int16), None),
    ):
        hdu = fits.ImageHDU(data, name=name)
        hdu.header.update(wcs_header)
        if unit:
            hdu.header["BUNIT"] = unit
        images.append(hdu)
    images[2].header["COMMENT"] = "DQ bits: " + describe_bits()
    images[3].header["COMMENT"] = "sum of the exposure times of the members used at each pixel"
    images[4].header["COMMENT"] = "number of members used at each pixel"
    cat = fits.BinTableHDU(Table(sources), name="CAT")
    cat.header["COMMENT"] = "x, y: 0-based pixels of SCI; flux, flux_err: e- at the reference exposure"
    table = Table(
        rows=[tuple(_cell(column, m.get(column)) for column in MEMBER_COLUMNS) for m in members],
        names=MEMBER_COLUMNS,
        dtype=("U200", bool, "f8", "f8", "f8", "f8", "U300"),
    )
    return fits.HDUList([primary, *images, cat, fits.BinTableHDU(table, name="MEMBERS")])


def _cell(column: str, value):
    if value is None:
        return "" if column in ("file", "reason") else np.nan
    return value
