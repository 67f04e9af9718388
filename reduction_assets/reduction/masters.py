"""Master bias, dark and flat from raw calibration frames (pure: files in, arrays out).

Each candidate frame is first inspected on its own (one frame in memory): overscan levels, a robust
level of the calibrated image, its saturated fraction and a hash of its pixels. Frames that would
poison the master are rejected with a reason (marked bad, wrong shape, duplicate pixels, a level far
from the others, saturated or too faint flats, darks without exposure time). The survivors are then
combined in row blocks within a memory budget.

Units: masters of bias are in electrons (e-), of dark in e-/s (or e- at their own exposure time for
cameras whose darks include the bias), of flat dimensionless (illuminated level 1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std

from reduction_assets.fits.headers import binning_from_header
from reduction_assets.instruments import Geometry, Instrument
from reduction_assets.kernels import combine_blocks
from reduction_assets.kernels.streaming import read_fits_rows
from reduction_assets.reduction import calibrate
from reduction_assets.reduction.dq import DQ

Kind = Literal["bias", "dark", "flat"]


@dataclass(frozen=True)
class InputFrame:
    """One raw calibration frame offered to a master."""

    name: str
    path: Path
    checksum: str
    exptime: float  # s
    date_obs: str
    bad: bool = False
    bad_reason: str | None = None


@dataclass(frozen=True)
class MasterSettings:
    """How masters are made. Defaults follow common practice (BANZAI, ccdproc)."""

    method: Literal["sigma_clip", "median", "mean"] = "sigma_clip"
    sigma: float = 3.0
    max_iters: int | None = None
    # A standard deviation cannot reject one cosmic ray among five frames (the largest possible z-score
    # of 5 values is 1.79); the MAD can, as BANZAI's stacking does.
    scale: Literal["std", "mad"] = "mad"
    min_frames: int = 3
    memory_budget: int = 512 * 2**20  # bytes
    outlier_sigma: float = 5.0  # frame levels further than this from the others are rejected
    overscan_method: Literal["median", "poly"] = "median"
    min_flat_level: float = 1000.0  # e-: fainter flats are too noisy
    max_saturated_fraction: float = 1e-3  # flats with more saturated pixels are rejected
    flat_threshold: float = 0.1  # fraction of the median that counts as illuminated
    hot_sigma: float = 10.0  # dark pixels this far above the median rate are flagged HOT


@dataclass
class MasterProduct:
    kind: Kind
    data: np.ndarray  # float32
    error: np.ndarray  # float32, standard error of data
    dq: np.ndarray  # uint16, DQ bits
    n_used: np.ndarray  # int32
    inputs: list[InputFrame]
    rejected: list[tuple[str, str]]
    statistics: dict[str, float]
    exptime: float | None = None  # for masters applying at one exposure time only


@dataclass
class NoMaster:
    kind: Kind
    reason: str
    rejected: list[tuple[str, str]] = field(default_factory=list)
    candidates: int = 0


@dataclass
class _Inspected:
    frame: InputFrame
    overscan: np.ndarray | None  # ADU per row
    level: float  # robust level of the calibrated image (unit of the combined stack before scaling)
    saturated_fraction: float
    pixel_hash: str


def _read_full(path: Path) -> np.ndarray:
    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32)


class _Calibrator:
    """Turns raw rows into the values to combine, for one kind of master."""

    def __init__(self, kind: Kind, instrument: Instrument, geometry: Geometry, settings: MasterSettings,
                 bias: np.ndarray | None, dark: np.ndarray | None):
        self.kind = kind
        self.instrument = instrument
        self.geometry = geometry
        self.settings = settings
        self.bias = bias
        self.dark = dark
        self.rows, self.columns = geometry.imaging

    def overscan(self, raw: np.ndarray) -> np.ndarray | None:
        if self.geometry.overscan is None:
            return None
        return calibrate.overscan_levels(raw, self.geometry.overscan, method=self.settings.overscan_method)

    def rows_in_electrons(self, raw_rows: np.ndarray, levels: np.ndarray | None, r0: int, r1: int,
                          exptime: float) -> np.ndarray:
        image = raw_rows if levels is None else calibrate.subtract_overscan(raw_rows, levels[r0:r1])
        image = calibrate.to_electrons(calibrate.trim(image, (slice(None), self.columns)),
                                       self.instrument.gain)
        if self.kind in ("dark", "flat") and self.bias is not None:
            image = calibrate.subtract_bias(image, self.bias[r0:r1])
        if self.kind == "flat" and self.dark is not None:
            image = calibrate.subtract_dark(image, self.dark[r0:r1], exptime)
        if self.kind == "dark" and not self.instrument.darks_include_bias:
            image = image / np.float32(exptime)
        return image.astype(np.float32, copy=False)


def _robust_outliers(levels: np.ndarray, nsigma: float, floor: float) -> np.ndarray:
    """Indices whose level is further than max(nsigma x robust scatter, floor) from the median."""
    centre = np.median(levels)
    scatter = mad_std(levels) if levels.size > 2 else 0.0
    limit = max(nsigma * scatter, floor)
    return np.flatnonzero(np.abs(levels - centre) > limit)


def build_master(
    kind: Kind,
    frames: list[InputFrame],
    instrument: Instrument,
    settings: MasterSettings = MasterSettings(),
    *,
    bias: np.ndarray | None = None,
    dark: np.ndarray | None = None,
) -> MasterProduct | NoMaster:
    """Build one master from raw frames of one instrument, binning (and filter or exposure time).

    ``bias`` (e-) is subtracted from darks and flats, ``dark`` (e-/s) scaled and subtracted from
    flats; both on the trimmed imaging area. Returns :class:`NoMaster` with the reason when fewer
    than ``settings.min_frames`` frames survive the rejections.
    """
    rejected: list[tuple[str, str]] = []
    candidates = [f for f in frames if not f.bad]
    rejected += [(f.name, f"marked bad: {f.bad_reason or 'no reason given'}") for f in frames if f.bad]
    if kind == "dark":
        for f in [f for f in candidates if f.exptime <= 0]:
            rejected.append((f.name, f"dark with EXPTIME {f.exptime:g} s gives no dark current"))
        candidates = [f for f in candidates if f.exptime > 0]
    shapes = {}
    for f in candidates:
        header = fits.getheader(f.path)
        shapes[f.name] = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    if candidates:
        values, counts = np.unique([f"{s[0]}x{s[1]}" for s in shapes.values()], return_counts=True)
        majority = tuple(int(v) for v in values[np.argmax(counts)].split("x"))
        for f in [f for f in candidates if shapes[f.name] != majority]:
            rejected.append((f.name, f"shape {shapes[f.name]} differs from the group's {majority}"))
        candidates = [f for f in candidates if shapes[f.name] == majority]
    if not candidates:
        return NoMaster(kind, "no usable frames", rejected, len(frames))
    raw_shape = shapes[candidates[0].name]
    binning = _binning_of(instrument, candidates[0].path)
    geometry = instrument.geometry(raw_shape, binning)
    if geometry is None:
        return NoMaster(kind, f"shape {raw_shape} is not a readout of {instrument.name}", rejected,
                        len(frames))
    image_shape = (geometry.imaging[0].stop - geometry.imaging[0].start,
                   geometry.imaging[1].stop - geometry.imaging[1].start)
    for name, calibration in (("bias", bias), ("dark", dark)):
        if calibration is not None and calibration.shape != image_shape:
            return NoMaster(kind, f"the master {name} has shape {calibration.shape}, the frames "
                            f"{image_shape}", rejected, len(frames))
    calibrator = _Calibrator(kind, instrument, geometry, settings, bias, dark)

    inspected: list[_Inspected] = []
    seen_pixels: dict[str, str] = {}
    first_bias: np.ndarray | None = None
    read_noise_e = float("nan")
    for f in candidates:
        raw = _read_full(f.path)
        pixel_hash = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()
        if pixel_hash in seen_pixels:
            rejected.append((f.name, f"duplicate pixel data of {seen_pixels[pixel_hash]}"))
            continue
        seen_pixels[pixel_hash] = f.name
        levels = calibrator.overscan(raw)
        image = calibrator.rows_in_electrons(raw, levels, 0, raw.shape[0], f.exptime)
        if kind == "bias" and np.isnan(read_noise_e):
            # The classic estimate: the scatter of the difference of two bias frames, over sqrt(2).
            if first_bias is None:
                first_bias = image
            else:
                read_noise_e = float(mad_std(image - first_bias, ignore_nan=True) / np.sqrt(2.0))
                first_bias = None
        imaging_raw = raw[geometry.imaging]
        inspected.append(_Inspected(
            frame=f, overscan=levels,
            level=calibrate.illuminated_level(image, threshold=settings.flat_threshold)
            if kind == "flat" else float(np.nanmedian(image)),
            saturated_fraction=float(np.mean(imaging_raw >= instrument.saturation)),
            pixel_hash=pixel_hash))

    if kind == "flat":
        keep = []
        for item in inspected:
            if not (np.isfinite(item.level) and item.level > 0):
                rejected.append((item.frame.name, f"zero or negative illumination ({item.level:.1f} e-)"))
            elif item.saturated_fraction > settings.max_saturated_fraction:
                rejected.append((item.frame.name, f"saturated: {100 * item.saturated_fraction:.2f}% of "
                                 f"pixels at {instrument.saturation:g} ADU"))
            elif item.level < settings.min_flat_level:
                rejected.append((item.frame.name, f"too faint: level {item.level:.0f} e- < "
                                 f"{settings.min_flat_level:g} e-"))
            else:
                keep.append(item)
        inspected = keep
    elif len(inspected) >= 3:
        levels = np.array([item.level for item in inspected])
        # A floor keeps frames in when all levels agree better than the noise can tell apart.
        if kind == "bias":
            floor = instrument.read_noise
        elif instrument.darks_include_bias:
            floor = instrument.read_noise + 0.05 * abs(float(np.median(levels)))
        else:
            floor = instrument.read_noise / max(min(item.frame.exptime for item in inspected), 1.0)
        for index in sorted(_robust_outliers(levels, settings.outlier_sigma, floor), reverse=True):
            item = inspected.pop(index)
            rejected.append((item.frame.name, f"level {item.level:.3g} far from the others' median "
                             f"{np.median(levels):.3g}"))

    if len(inspected) < settings.min_frames:
        return NoMaster(kind, f"not enough frames: {len(inspected)} usable of {len(frames)}, need "
                        f"{settings.min_frames}", rejected, len(frames))

    scales = None
    if kind == "flat":
        scales = 1.0 / np.array([item.level for item in inspected])

    def read_block(k: int, r0: int, r1: int) -> np.ndarray:
        item = inspected[k]
        raw_rows = read_fits_rows(item.frame.path, r0, r1)
        return calibrator.rows_in_electrons(raw_rows, item.overscan, r0, r1, item.frame.exptime)

    result = combine_blocks(
        read_block, len(inspected), image_shape, settings.method, memory_budget=settings.memory_budget,
        sigma_low=settings.sigma, sigma_high=settings.sigma, max_iters=settings.max_iters,
        scale=settings.scale, scales=scales)
    data, error = result.data, result.error
    dq = np.zeros(image_shape, dtype=np.uint16)
    dq[result.n_used == 0] |= np.uint16(DQ.NO_DATA)
    dq[result.n_used < 2] |= np.uint16(DQ.LOW_COUNT)
    statistics: dict[str, float] = {"n_frames": float(len(inspected))}
    good = dq == 0
    if kind == "flat":
        level = calibrate.illuminated_level(data, threshold=settings.flat_threshold)
        data = calibrate.normalise_flat(data, level)
        error = (error / np.float32(level)).astype(np.float32)
        dq[(data < 0.5) & good] |= np.uint16(DQ.LOW_RESPONSE)
        dq[(data > 1.5) & good] |= np.uint16(DQ.HIGH_RESPONSE)
        finite = data[np.isfinite(data)]
        statistics.update(
            median=float(np.median(finite)),
            illuminated_level=float(calibrate.illuminated_level(data, threshold=settings.flat_threshold)),
            bad_fraction=float(np.mean(dq != 0)),
            mean_input_level_e=float(np.mean([item.level for item in inspected])))
    elif kind == "dark":
        values = data[good]
        centre = float(np.median(values))
        spread = float(mad_std(values))
        hot = (data > centre + settings.hot_sigma * max(spread, 1e-6)) & good
        dq[hot] |= np.uint16(DQ.HOT)
        statistics.update(median=centre, robust_std=spread, hot_pixels=float(hot.sum()),
                          median_error=float(np.median(error[good])) if good.any() else float("nan"))
    else:
        values = data[good]
        statistics.update(median=float(np.median(values)), robust_std=float(mad_std(values)),
                          read_noise_e=read_noise_e)
    exptime = None
    if kind == "dark" and instrument.darks_include_bias:
        exptime = float(inspected[0].frame.exptime)
    return MasterProduct(kind=kind, data=data, error=error, dq=dq, n_used=result.n_used,
                         inputs=[item.frame for item in inspected], rejected=rejected,
                         statistics=statistics, exptime=exptime)


def _binning_of(instrument: Instrument, path: Path) -> tuple[int, int]:
    return binning_from_header(instrument, fits.getheader(path))
