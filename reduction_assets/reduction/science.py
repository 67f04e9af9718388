"""Science-frame reduction: raw ADU to calibrated electrons with an uncertainty and a DQ plane.

Order of the steps and the noise model (variances in e-^2, per pixel)::

    e      = (raw - overscan(row)) * gain  [trimmed]
    e     -= bias                           var  = read_noise^2 + var_bias
    e     -= dark_rate * t                  var += var_dark * t^2
                                            var += max(e, 0)            (Poisson: sky, stars, dark)
    sci    = e / flat                       var  = var / flat^2 + sci^2 * var_flat / flat^2

SCI is in electrons, ERR = sqrt(var). DQ collects the masters' flags (no data, hot, low/high
response), saturation in the raw frame, the instrument's bad pixels and cosmic rays (astroscrappy,
L.A.Cosmic). Pixels flagged NO_DATA hold 0 in SCI, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import astroscrappy
import numpy as np

from reduction_assets.instruments import Geometry, Instrument
from reduction_assets.reduction import calibrate
from reduction_assets.reduction.dq import DQ
from reduction_assets.reduction.masters import Master


@dataclass(frozen=True)
class ScienceSettings:
    overscan_method: str = "median"
    cosmic_sigclip: float = 4.5
    cosmic_sigfrac: float = 0.3
    cosmic_objlim: float = 5.0
    psf_fwhm: float = 3.0  # pixels, a first guess for the cosmic-ray filter


@dataclass
class CalibratedFrame:
    sci: np.ndarray  # e-
    err: np.ndarray  # e-
    dq: np.ndarray  # uint16
    statistics: dict[str, float]


class NotReducible(Exception):
    """A frame that cannot be reduced as asked (a clear reason, recorded with the frame)."""


def _flag(dq: np.ndarray, where: np.ndarray, bit: DQ) -> None:
    dq[where] |= np.uint16(bit)


COSMIC_PAD = 6  # pixels


def detect_cosmic_rays(
    sci: np.ndarray, variance: np.ndarray, ignore: np.ndarray, read_noise: float, settings: ScienceSettings
) -> np.ndarray:
    """Cosmic-ray mask by L.A.Cosmic (astroscrappy) on a calibrated frame in electrons.

    The frame is padded with its median first: the Laplacian filter misses hits on the outermost
    rows and columns otherwise (a quarter of the misses in tests of small frames).
    """
    pad = COSMIC_PAD
    padded = np.pad(sci, pad, constant_values=float(np.median(sci))).astype(np.float32)
    padded_var = np.pad(variance, pad, constant_values=float(np.median(variance))).astype(np.float32)
    padded_ignore = np.pad(ignore, pad, constant_values=False)
    mask, _ = astroscrappy.detect_cosmics(
        padded,
        inmask=padded_ignore,
        invar=padded_var,
        sigclip=settings.cosmic_sigclip,
        sigfrac=settings.cosmic_sigfrac,
        objlim=settings.cosmic_objlim,
        gain=1.0,
        readnoise=read_noise,
        satlevel=np.inf,
        psffwhm=settings.psf_fwhm,
        cleantype="meanmask",
        verbose=False,
    )
    return mask[pad:-pad, pad:-pad]


def calibrate_science(
    raw: np.ndarray,
    *,
    instrument: Instrument,
    geometry: Geometry,
    exptime: float,
    bias: Master | None,
    dark: Master,
    flat: Master,
    bad_pixels: np.ndarray | None = None,
    settings: ScienceSettings = ScienceSettings(),
) -> CalibratedFrame:
    """Remove the instrument signature from one raw science frame (ADU) and flag what is suspect.

    ``bias`` may be None only for cameras whose darks include the bias (then ``dark`` must be of
    the frame's exposure time). Raises :class:`NotReducible` for frames that cannot be calibrated.
    """
    if not exptime > 0:
        raise NotReducible(f"science frame with EXPTIME {exptime:g} s")
    shape = (
        geometry.imaging[0].stop - geometry.imaging[0].start,
        geometry.imaging[1].stop - geometry.imaging[1].start,
    )
    for name, master in (("bias", bias), ("dark", dark), ("flat", flat)):
        if master is not None and master.data.shape != shape:
            raise NotReducible(f"master {name} has shape {master.data.shape}, the frame {shape}")
    raw = np.asarray(raw, dtype=np.float32)
    dq = np.zeros(shape, dtype=np.uint16)
    # Floating-point raw data may carry NaN or infinities (a dropped readout block): no data there.
    missing = ~np.isfinite(raw[geometry.imaging])
    if missing.all():
        raise NotReducible("the frame has no finite pixel in its imaging area")
    _flag(dq, missing, DQ.NO_DATA)
    _flag(dq, raw[geometry.imaging] >= instrument.saturation, DQ.SATURATED)
    if bad_pixels is not None:
        _flag(dq, bad_pixels, DQ.BAD_PIXEL)

    if geometry.overscan is not None:
        levels = calibrate.overscan_levels(raw, geometry.overscan, method=settings.overscan_method)
        raw = calibrate.subtract_overscan(raw, levels)
    electrons = calibrate.to_electrons(calibrate.trim(raw, geometry.imaging), instrument.gain)
    variance = np.full(shape, instrument.read_noise**2, dtype=np.float32)
    if instrument.darks_include_bias:
        try:
            bias_and_dark = calibrate.dark_for_exposure(
                dark.data, master_exptime=dark.exptime, exptime=exptime, includes_bias=True
            )
        except ValueError as err:
            raise NotReducible(str(err)) from err
        electrons = calibrate.subtract_bias(electrons, bias_and_dark)
        variance += dark.error**2
    else:
        if bias is None:
            raise NotReducible("no master bias")
        electrons = calibrate.subtract_bias(electrons, bias.data)
        variance += bias.error**2
        electrons = calibrate.subtract_dark(electrons, dark.data, exptime)
        variance += (dark.error * np.float32(exptime)) ** 2
        # Poisson noise of the dark current removed above is part of the raw signal.
        variance += np.clip(dark.data * np.float32(exptime), 0, None)
        _flag(dq, (bias.dq & (DQ.NO_DATA | DQ.LOW_COUNT)) != 0, DQ.NO_DATA)
    _flag(dq, (dark.dq & DQ.NO_DATA) != 0, DQ.NO_DATA)
    _flag(dq, (dark.dq & DQ.HOT) != 0, DQ.HOT)
    variance += np.clip(electrons, 0, None)

    good_flat = np.isfinite(flat.data) & (flat.data > 0.05)
    _flag(dq, ~good_flat | ((flat.dq & DQ.NO_DATA) != 0), DQ.NO_DATA)
    _flag(dq, (flat.dq & DQ.LOW_RESPONSE) != 0, DQ.LOW_RESPONSE)
    _flag(dq, (flat.dq & DQ.HIGH_RESPONSE) != 0, DQ.HIGH_RESPONSE)
    safe_flat = np.where(good_flat, flat.data, 1.0).astype(np.float32)
    sci = electrons / safe_flat
    flat_error = np.where(good_flat, flat.error, 0.0).astype(np.float32)
    variance = variance / safe_flat**2 + (sci * flat_error / safe_flat) ** 2
    no_data = (dq & DQ.NO_DATA) != 0
    sci[no_data] = 0.0
    variance[no_data | ~np.isfinite(variance)] = np.float32(instrument.read_noise**2)
    err = np.sqrt(variance).astype(np.float32)

    crmask = detect_cosmic_rays(
        sci, variance, (dq & (DQ.NO_DATA | DQ.SATURATED | DQ.HOT)) != 0, instrument.read_noise, settings
    )
    _flag(dq, crmask, DQ.COSMIC_RAY)
    clean = dq == 0
    statistics = {
        "sky_median_e": float(np.median(sci[clean])) if clean.any() else float("nan"),
        "cosmic_ray_pixels": float(crmask.sum()),
        "saturated_pixels": float(((dq & DQ.SATURATED) != 0).sum()),
        "flagged_fraction": float(np.mean(~clean)),
    }
    return CalibratedFrame(sci=sci.astype(np.float32), err=err, dq=dq, statistics=statistics)
