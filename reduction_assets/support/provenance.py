"""Provenance: what a product was made from and by which version of which step.

A product's *fingerprint* hashes everything that determines its content: its inputs' checksums, the
masters used, the settings, and the version of the step's algorithm. A product is rebuilt exactly
when its fingerprint changes. Each step's version lives in :data:`STEPS` beside the list of modules
that make up the step; a test (``test_step_versions``) fails when a step's code changes without its
version changing, so a fix to a step redoes the products that step made, and only those.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    version: int
    modules: tuple[str, ...]  # the code whose changes change this step's products


_FITS_WRITERS = ("reduction_assets.fits.products",)
_CALIBRATION = ("reduction_assets.reduction.calibrate", "reduction_assets.reduction.dq")

STEPS: dict[str, Step] = {
    "master": Step(
        6,
        (
            "reduction_assets.reduction.masters",
            "reduction_assets.reduction.pedestal",
            "reduction_assets.kernels.combine",
            "reduction_assets.kernels._combine_kernel",
            "reduction_assets.kernels.float_keys",
            "reduction_assets.kernels.network",
            "reduction_assets.kernels.streaming",
            "reduction_assets.kernels.select",
            *_CALIBRATION,
            *_FITS_WRITERS,
        ),
    ),
    "reduced": Step(
        7,
        (
            "reduction_assets.reduction.science",
            "reduction_assets.reduction.cosmics",
            "reduction_assets.kernels.lacosmic",
            "reduction_assets.kernels.signature",
            "reduction_assets.kernels.select",
            "reduction_assets.kernels.float_keys",
            "reduction_assets.kernels.fill",
            "reduction_assets.kernels.peaks",
            "reduction_assets.kernels.apertures",
            "reduction_assets.kernels.bits",
            "reduction_assets.reduction.sources",
            "reduction_assets.reduction.wcs",
            *_CALIBRATION,
            *_FITS_WRITERS,
        ),
    ),
    "stacked": Step(
        3,
        (
            "reduction_assets.reduction.stacking",
            "reduction_assets.kernels.resample",
            "reduction_assets.kernels.coadd",
            "reduction_assets.kernels.peaks",
            "reduction_assets.kernels.apertures",
            "reduction_assets.kernels.bits",
            "reduction_assets.reduction.sources",
            "reduction_assets.reduction.wcs",
            "reduction_assets.fits.stacks",
            "reduction_assets.fits.products",
        ),
    ),
}


def fingerprint(step: str, **parts: Any) -> str:
    """SHA-256 of a step's name and version and of ``parts`` (JSON; dates and paths as text)."""
    payload = {"step": step, "version": STEPS[step].version, **parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def step_version(step: str) -> str:
    """``"master/1"``: the version recorded with a product (headers and catalog rows)."""
    return f"{step}/{STEPS[step].version}"


@dataclass(frozen=True)
class UsedCalibration:
    """A master that went into a product: recorded as ``{TAG}ID``, ``{TAG}FILE``, ``{TAG}AGE``."""

    kind: str  # bias, dark or flat
    id: int
    key: str
    night: dt.date
    checksum: str


def calibrations_payload(used: Mapping[str, UsedCalibration]) -> dict[str, list]:
    """The masters of a fingerprint: id and checksum per kind (a rebuilt master changes it)."""
    return {kind: [calibration.id, calibration.checksum] for kind, calibration in sorted(used.items())}
