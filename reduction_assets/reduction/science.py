"""Science-frame reduction: raw ADU to calibrated electrons with an uncertainty and a DQ plane.

Order of the steps and the noise model (variances in e-^2, per pixel)::

    e      = (raw - overscan(row)) * gain  [trimmed]
    e     -= bias                           var  = read_noise^2 + var_bias
    e     -= dark_rate * t                  var += var_dark * t^2
                                            var += max(e, 0)            (Poisson: sky, stars, dark)
    sci    = e / flat                       var  = var / flat^2 + sci^2 * var_flat / flat^2

SCI is in electrons, ERR = sqrt(var). DQ collects the masters' flags (no data, hot, low/high
response), saturation in the raw frame, the instrument's bad pixels and cosmic rays (L.A.Cosmic
candidates sharper than the PSF, see :mod:`reduction_assets.reduction.cosmics`). Pixels flagged
NO_DATA hold 0 in SCI, never NaN. A master that is not given (an optional calibration) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reduction_assets.instruments import Geometry, Instrument
from reduction_assets.kernels.bits import any_set
from reduction_assets.kernels.select import median
from reduction_assets.kernels.signature import DQCarry, MasterPlanes, any_finite, remove_signature
from reduction_assets.reduction import calibrate
from reduction_assets.reduction.cosmics import CosmicSettings, confirm_cosmic_rays, lacosmic_candidates
from reduction_assets.reduction.dq import DQ
from reduction_assets.reduction.masters import Master
from reduction_assets.reduction.sources import estimate_fwhm, extract_sources, no_sources, subtract_sky

# The masters' DQ bits a science frame takes: a bias pixel without data or with too few frames
# leaves none; a dark's hot pixels and a flat's odd responses are flagged as they are.
BIAS_DQ = DQCarry(merge=DQ.NO_DATA | DQ.LOW_COUNT, merge_into=DQ.NO_DATA)
DARK_DQ = DQCarry(copy=DQ.NO_DATA | DQ.HOT)
FLAT_DQ = DQCarry(copy=DQ.NO_DATA | DQ.LOW_RESPONSE | DQ.HIGH_RESPONSE)
MIN_FLAT_RESPONSE = 0.05  # flat values at or below this (or not finite) leave no data


@dataclass(frozen=True)
class ScienceSettings:
    overscan_method: str = "median"
    cosmics: CosmicSettings = field(default_factory=CosmicSettings)
    # The cosmic-ray test assumes a PSF this much sharper than the frame's measured median FWHM (a
    # margin for seeing that varies across the field), or default_psf_fwhm (pixels) when too few
    # stars are measured. Spectra use their mode's line FWHM instead.
    psf_margin: float = 0.8
    default_psf_fwhm: float = 2.0


@dataclass
class CalibratedFrame:
    sci: np.ndarray  # e-
    err: np.ndarray  # e-
    dq: np.ndarray  # uint16
    statistics: dict[str, float]


class NotReducible(Exception):
    """A frame that cannot be reduced as asked (a clear reason, recorded with the frame)."""


def _flag(dq: np.ndarray, where: np.ndarray, bit: DQ) -> None:
    np.bitwise_or(dq, np.uint16(bit), out=dq, where=where)


def calibrate_science(
    raw: np.ndarray,
    *,
    instrument: Instrument,
    geometry: Geometry,
    exptime: float,
    bias: Master | None,
    dark: Master | None,
    flat: Master | None,
    bad_pixels: np.ndarray | None = None,
    settings: ScienceSettings = ScienceSettings(),
    line_fwhm: float | None = None,
) -> CalibratedFrame:
    """Remove the instrument signature from one raw science frame (ADU) and flag what is suspect.

    A ``dark`` with an exposure time (``Master.exptime > 0``) includes the bias and applies to
    exposures of that time only (cameras without bias frames); then ``bias`` is None. A master that
    is None is not applied (an optional calibration the frame's mode may do without). ``line_fwhm``
    (pixels) marks a spectrum: the cosmic-ray test uses it as the sharpest real structure instead of
    the stars' FWHM. Raises :class:`NotReducible` for frames that cannot be calibrated.
    """
    raw = _checked_raw(raw, instrument, geometry, exptime, bias, dark, flat)
    levels = None
    zero_level_adu = 0.0
    if geometry.overscan is not None:
        levels = calibrate.overscan_levels(raw, geometry.overscan, method=settings.overscan_method)
        zero_level_adu = float(np.median(levels))
    subtracted = _subtracted_masters(bias, dark, exptime)
    planes = remove_signature(
        raw,
        geometry.imaging,
        levels,
        gain=instrument.gain,
        read_noise=instrument.read_noise,
        saturation=instrument.saturation,
        bits=(DQ.NO_DATA, DQ.SATURATED, DQ.BAD_PIXEL),
        bad_pixels=bad_pixels,
        offset=subtracted.offset,
        dark=subtracted.rate,
        dark_exptime=exptime if subtracted.rate is not None else None,
        flat=None if flat is None else MasterPlanes(flat.data, flat.error, flat.dq, FLAT_DQ),
        min_flat=MIN_FLAT_RESPONSE,
    )
    sci, variance, err, dq = planes.sci, planes.variance, planes.err, planes.dq

    ignore, saturated = any_set(dq, DQ.NO_DATA | DQ.SATURATED | DQ.HOT, DQ.SATURATED)
    cosmics = _cosmic_rays(sci, variance, err, ignore, instrument, settings, line_fwhm)
    _flag(dq, cosmics.mask, DQ.COSMIC_RAY)
    # Raw saturation in electrons above the level bias subtraction removed (before the flat).
    saturation_e = float((instrument.saturation - zero_level_adu) * instrument.gain - subtracted.pedestal_e)
    statistics = _frame_statistics(sci, dq, cosmics, saturated, saturation_e)
    return CalibratedFrame(sci=sci, err=err, dq=dq, statistics=statistics)


def _checked_raw(
    raw: np.ndarray,
    instrument: Instrument,
    geometry: Geometry,
    exptime: float,
    bias: Master | None,
    dark: Master | None,
    flat: Master | None,
) -> np.ndarray:
    """The raw frame as float32, once it and its masters prove fit to calibrate (else
    :class:`NotReducible`)."""
    if not exptime > 0:
        raise NotReducible(f"science frame with EXPTIME {exptime:g} s")
    shape = geometry.imaging_shape
    for name, master in (("bias", bias), ("dark", dark), ("flat", flat)):
        if master is not None and master.data.shape != shape:
            raise NotReducible(f"master {name} has shape {master.data.shape}, the frame {shape}")
    raw = np.asarray(raw, dtype=np.float32)
    # Floating-point raw data may carry NaN or infinities (a dropped readout block): no data there.
    if not any_finite(raw[geometry.imaging]):
        raise NotReducible("the frame has no finite pixel in its imaging area")
    calibrate.check_gain(instrument.gain)
    return raw


@dataclass(frozen=True)
class _Subtracted:
    """The masters subtracted from a frame: a fixed offset (bias, or a dark that includes it), a
    dark rate scaled by the exposure time, and the pedestal (e-) the offset removes."""

    offset: MasterPlanes | None
    rate: MasterPlanes | None
    pedestal_e: float


def _subtracted_masters(bias: Master | None, dark: Master | None, exptime: float) -> _Subtracted:
    """What is subtracted from a frame of ``exptime`` seconds, given its bias and dark."""
    offset = rate = None
    pedestal_e = 0.0  # what bias subtraction removed, e- (the level saturation is counted from)
    if dark is not None and dark.exptime > 0:
        try:
            bias_and_dark = calibrate.dark_for_exposure(
                dark.data, master_exptime=dark.exptime, exptime=exptime, includes_bias=True
            )
        except ValueError as err:
            raise NotReducible(str(err)) from err
        offset = MasterPlanes(bias_and_dark, dark.error, dark.dq, DARK_DQ)
        pedestal_e = median(bias_and_dark, skip_nan=True)
    else:
        if bias is not None:
            offset = MasterPlanes(bias.data, bias.error, bias.dq, BIAS_DQ)
            pedestal_e = median(bias.data, skip_nan=True)
        if dark is not None:
            rate = MasterPlanes(dark.data, dark.error, dark.dq, DARK_DQ)
    return _Subtracted(offset, rate, pedestal_e)


@dataclass(frozen=True)
class _CosmicRays:
    """The cosmic rays of a frame: L.A.Cosmic's candidates, those confirmed, and the PSF FWHM
    (pixels) they were judged against."""

    candidates: np.ndarray
    mask: np.ndarray
    psf_fwhm: float


def _cosmic_rays(
    sci: np.ndarray,
    variance: np.ndarray,
    err: np.ndarray,
    ignore: np.ndarray,
    instrument: Instrument,
    settings: ScienceSettings,
    line_fwhm: float | None,
) -> _CosmicRays:
    """Find the cosmic rays of a calibrated frame (pixels in ``ignore`` are never candidates)."""
    candidates = lacosmic_candidates(sci, variance, ignore, instrument.read_noise, settings.cosmics)
    unclear = ignore | candidates  # left out of the sky and the seeing
    signal, _, _ = subtract_sky(sci, unclear)
    measured = None if line_fwhm else estimate_fwhm(signal, err, unclear)
    psf_fwhm = line_fwhm or (settings.psf_margin * measured if measured else settings.default_psf_fwhm)
    crmask = confirm_cosmic_rays(candidates, signal, variance, psf_fwhm, settings.cosmics.sharpness_sigma)
    return _CosmicRays(candidates, crmask, psf_fwhm)


def _frame_statistics(
    sci: np.ndarray, dq: np.ndarray, cosmics: _CosmicRays, saturated: np.ndarray, saturation_e: float
) -> dict[str, float]:
    """What the calibration of a frame measured (``dq`` final, cosmic rays flagged)."""
    clean = dq == 0
    return {
        "sky_median_e": median(sci, clean),
        "cosmic_ray_pixels": float(np.count_nonzero(cosmics.mask)),
        "cosmic_ray_candidates": float(np.count_nonzero(cosmics.candidates)),
        "cosmic_ray_psf_fwhm": float(cosmics.psf_fwhm),
        "saturated_pixels": float(np.count_nonzero(saturated)),
        # The fraction as np.mean of the flags gives it: an exact count over the size.
        "flagged_fraction": float(dq.size - np.count_nonzero(clean)) / dq.size,
        "saturation_e": saturation_e,
    }


@dataclass(frozen=True)
class ScienceFrame:
    """Everything the reduction of one science frame needs, as arrays and plain values (picklable,
    so that a pool of worker processes can reduce frames side by side)."""

    raw: np.ndarray  # ADU, the whole readout
    instrument: Instrument
    geometry: Geometry
    exptime: float  # s
    masters: dict[str, Master]  # bias, dark, flat: those the frame's mode uses and were found
    bad_pixels: np.ndarray | None = None
    spectrum: bool = False  # dispersed light: no source catalogue
    line_fwhm: float | None = None  # pixels, a spectrum's sharpest lines (the cosmic-ray test)
    detection_threshold: float = 5.0  # x ERR
    settings: ScienceSettings = ScienceSettings()


@dataclass
class ReducedScience:
    calibrated: CalibratedFrame
    sources: np.ndarray  # the structured array of :func:`extract_sources`
    source_statistics: dict[str, float]


def reduce_science_frame(frame: ScienceFrame) -> ReducedScience:
    """Calibrate one raw science frame and catalogue its sources (none for a spectrum, whose
    catalogue would list pieces of the spectrum). Raises :class:`NotReducible`."""
    calibrated = calibrate_science(
        frame.raw,
        instrument=frame.instrument,
        geometry=frame.geometry,
        exptime=frame.exptime,
        bias=frame.masters.get("bias"),
        dark=frame.masters.get("dark"),
        flat=frame.masters.get("flat"),
        bad_pixels=frame.bad_pixels,
        settings=frame.settings,
        line_fwhm=frame.line_fwhm if frame.spectrum else None,
    )
    if frame.spectrum:
        return ReducedScience(calibrated, no_sources(), {"n_sources": 0.0, "spectrum": 1.0})
    sources, statistics = extract_sources(
        calibrated.sci, calibrated.err, calibrated.dq, threshold=frame.detection_threshold
    )
    return ReducedScience(calibrated, sources, statistics)
