"""Master bias, dark and flat from raw calibration frames (pure: frames in through a reader, arrays out).

The work is in three parts:

1. **inspection**: each candidate frame on its own (one frame in memory): overscan levels, a robust
   level of the calibrated image, its saturated fraction and a hash of its pixels;
2. **rejection rules**, kept as data per master type (as BANZAI keeps its calibration rules): frames
   marked bad, darks without exposure time, frames of another shape, duplicate pixels, flats that are
   unlit, saturated or too faint, and frames whose level is far from the others';
3. **combination and post-processing**: the survivors are combined in row blocks within a memory
   budget, then flagged and described per type.

Units: masters of bias are in electrons (e-), of dark in e-/s (or e- at their own exposure time for
cameras whose darks include the bias), of flat dimensionless (illuminated level 1).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from astropy.stats import mad_std

from reduction_assets.instruments import Geometry, Instrument
from reduction_assets.kernels import CombineResult, NoiseModel, combine_blocks
from reduction_assets.kernels.select import median
from reduction_assets.reduction import calibrate
from reduction_assets.reduction.dq import DQ

Kind = Literal["bias", "dark", "flat"]


@dataclass(frozen=True)
class InputFrame:
    """One raw calibration frame offered to a master, as the catalog describes it."""

    name: str
    key: str  # where the reader finds it
    checksum: str
    exptime: float  # s
    date_obs: str
    shape: tuple[int, int]  # (ny, nx) of the raw data
    binning: tuple[int, int]  # (x, y)
    bad: bool = False
    bad_reason: str | None = None


class FrameReader(Protocol):
    """Gives the raw pixel values (ADU, float32) of input frames."""

    def read(self, frame: InputFrame) -> np.ndarray:
        """The whole raw frame."""

    def read_rows(self, frame: InputFrame, first: int, stop: int) -> np.ndarray:
        """Rows ``first:stop`` of the raw frame."""


@dataclass(frozen=True)
class Master:
    """A master calibration as arrays on the trimmed imaging area."""

    data: np.ndarray  # float32: e- (bias), e-/s or e- (dark), 1 (flat)
    error: np.ndarray  # float32, standard error of data
    dq: np.ndarray  # uint16, DQ bits
    exptime: float = 0.0  # s; for darks that include the bias: the exposure time they apply to


@dataclass(frozen=True)
class MasterSettings:
    """How masters are made. Defaults follow common practice (BANZAI, ccdproc)."""

    method: Literal["sigma_clip", "median", "mean"] = "sigma_clip"
    sigma: float = 3.0
    max_iters: int | None = None
    # The clipping scale. A standard deviation cannot reject one cosmic ray among five frames (the
    # largest possible z-score of 5 values is 1.79); the MAD can, as BANZAI's stacking does, but a
    # scatter measured from five values is itself noisy and clips good values (a bias 15% noisier
    # than a plain mean). "model" clips against the known noise (read noise, Poisson): both right.
    scale: Literal["std", "mad", "model"] = "model"
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
    master: Master
    n_used: np.ndarray  # int32, frames that entered each pixel
    inputs: list[InputFrame]
    rejected: list[tuple[str, str]]  # (frame name, reason)
    statistics: dict[str, float]


@dataclass
class NoMaster:
    kind: Kind
    reason: str
    rejected: list[tuple[str, str]] = field(default_factory=list)
    candidates: int = 0


@dataclass
class Inspected:
    """What inspection learnt of one frame."""

    frame: InputFrame
    overscan: np.ndarray | None  # ADU per row
    level: float  # robust level of the calibrated image (illuminated level for flats)
    saturated_fraction: float
    pixel_hash: str


class _Calibrator:
    """Turns raw rows into the values to combine, for one kind of master."""

    def __init__(
        self,
        kind: Kind,
        instrument: Instrument,
        geometry: Geometry,
        settings: MasterSettings,
        bias: np.ndarray | None,
        dark: np.ndarray | None,
    ):
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

    def rows_in_electrons(
        self, raw_rows: np.ndarray, levels: np.ndarray | None, r0: int, r1: int, exptime: float
    ) -> np.ndarray:
        image = raw_rows if levels is None else calibrate.subtract_overscan(raw_rows, levels[r0:r1])
        image = calibrate.to_electrons(
            calibrate.trim(image, (slice(None), self.columns)), self.instrument.gain
        )
        if self.kind in ("dark", "flat") and self.bias is not None:
            image = calibrate.subtract_bias(image, self.bias[r0:r1])
        if self.kind == "flat" and self.dark is not None:
            image = calibrate.subtract_dark(image, self.dark[r0:r1], exptime)
        if self.kind == "dark" and not self.instrument.darks_include_bias:
            image = image / np.float32(exptime)
        return image.astype(np.float32, copy=False)


# --- rejection rules: each returns the reason to reject, or None ---------------------------------

MetadataRule = Callable[[InputFrame], str | None]
FrameRule = Callable[[Inspected, Instrument, MasterSettings], str | None]


def _marked_bad(frame: InputFrame) -> str | None:
    return f"marked bad: {frame.bad_reason or 'no reason given'}" if frame.bad else None


def _no_exposure_time(frame: InputFrame) -> str | None:
    return f"dark with EXPTIME {frame.exptime:g} s gives no dark current" if frame.exptime <= 0 else None


def _unlit(item: Inspected, instrument: Instrument, settings: MasterSettings) -> str | None:
    if np.isfinite(item.level) and item.level > 0:
        return None
    return f"zero or negative illumination ({item.level:.1f} e-)"


def _saturated(item: Inspected, instrument: Instrument, settings: MasterSettings) -> str | None:
    if item.saturated_fraction <= settings.max_saturated_fraction:
        return None
    return f"saturated: {100 * item.saturated_fraction:.2f}% of pixels at {instrument.saturation:g} ADU"


def _too_faint(item: Inspected, instrument: Instrument, settings: MasterSettings) -> str | None:
    if item.level >= settings.min_flat_level:
        return None
    return f"too faint: level {item.level:.0f} e- < {settings.min_flat_level:g} e-"


def _bias_level_floor(instrument: Instrument, items: list[Inspected]) -> float:
    return instrument.read_noise


def _dark_level_floor(instrument: Instrument, items: list[Inspected]) -> float:
    if instrument.darks_include_bias:
        return instrument.read_noise + 0.05 * abs(float(np.median([item.level for item in items])))
    return instrument.read_noise / max(min(item.frame.exptime for item in items), 1.0)


# Rules on what the catalog knows, before any pixel is read.
METADATA_RULES: dict[Kind, tuple[MetadataRule, ...]] = {
    "bias": (_marked_bad,),
    "dark": (_marked_bad, _no_exposure_time),
    "flat": (_marked_bad,),
}
# Rules on one inspected frame.
FRAME_RULES: dict[Kind, tuple[FrameRule, ...]] = {
    "bias": (),
    "dark": (),
    "flat": (_unlit, _saturated, _too_faint),
}
# Frames whose level is far from the others' (with at least three frames to tell): the floor keeps
# frames in when all levels agree better than the noise can tell apart. Flats are scaled instead.
LEVEL_OUTLIER_FLOOR: dict[Kind, Callable[[Instrument, list[Inspected]], float] | None] = {
    "bias": _bias_level_floor,
    "dark": _dark_level_floor,
    "flat": None,
}


def _robust_outliers(levels: np.ndarray, nsigma: float, floor: float) -> np.ndarray:
    """Indices whose level is further than max(nsigma x robust scatter, floor) from the median."""
    centre = np.median(levels)
    scatter = mad_std(levels) if levels.size > 2 else 0.0
    limit = max(nsigma * scatter, floor)
    return np.flatnonzero(np.abs(levels - centre) > limit)


def _majority_shape(frames: list[InputFrame], rejected: list[tuple[str, str]]) -> list[InputFrame]:
    if not frames:
        return frames
    counts = Counter(frame.shape for frame in frames)
    most = max(counts.values())
    # A tie goes to the shape whose "NYxNX" label sorts first, as it always has.
    majority = min((shape for shape, n in counts.items() if n == most), key=lambda s: f"{s[0]}x{s[1]}")
    for frame in frames:
        if frame.shape != majority:
            rejected.append((frame.name, f"shape {frame.shape} differs from the group's {majority}"))
    return [frame for frame in frames if frame.shape == majority]


def _inspect(
    frames: list[InputFrame],
    reader: FrameReader,
    calibrator: _Calibrator,
    kind: Kind,
    instrument: Instrument,
    settings: MasterSettings,
    rejected: list[tuple[str, str]],
) -> tuple[list[Inspected], float]:
    """Inspect each frame (one in memory at a time); returns the survivors and, for biases, the read
    noise measured from the first pair (e-)."""
    inspected: list[Inspected] = []
    seen_pixels: dict[str, str] = {}
    first_bias: np.ndarray | None = None
    read_noise_e = float("nan")
    for frame in frames:
        raw = reader.read(frame)
        pixel_hash = hashlib.sha256(np.ascontiguousarray(raw).data).hexdigest()  # the bytes, not a copy
        if pixel_hash in seen_pixels:
            rejected.append((frame.name, f"duplicate pixel data of {seen_pixels[pixel_hash]}"))
            continue
        seen_pixels[pixel_hash] = frame.name
        levels = calibrator.overscan(raw)
        image = calibrator.rows_in_electrons(raw, levels, 0, raw.shape[0], frame.exptime)
        if kind == "bias" and np.isnan(read_noise_e):
            # The classic estimate: the scatter of the difference of two bias frames, over sqrt(2).
            if first_bias is None:
                first_bias = image
            else:
                read_noise_e = float(mad_std(image - first_bias, ignore_nan=True) / np.sqrt(2.0))
                first_bias = None
        item = Inspected(
            frame=frame,
            overscan=levels,
            level=calibrate.illuminated_level(image, threshold=settings.flat_threshold)
            if kind == "flat"
            else median(image, skip_nan=True),
            saturated_fraction=float(np.mean(raw[calibrator.geometry.imaging] >= instrument.saturation)),
            pixel_hash=pixel_hash,
        )
        reason = next(
            (r for r in (rule(item, instrument, settings) for rule in FRAME_RULES[kind]) if r), None
        )
        if reason:
            rejected.append((frame.name, reason))
        else:
            inspected.append(item)
    floor_of = LEVEL_OUTLIER_FLOOR[kind]
    if floor_of is not None and len(inspected) >= 3:
        levels = np.array([item.level for item in inspected])
        floor = floor_of(instrument, inspected)
        for index in sorted(_robust_outliers(levels, settings.outlier_sigma, floor), reverse=True):
            item = inspected.pop(index)
            rejected.append(
                (
                    item.frame.name,
                    f"level {item.level:.3g} far from the others' median {np.median(levels):.3g}",
                )
            )
    return inspected, read_noise_e


# --- post-processing per type ---------------------------------------------------------------------


def _finish_bias(
    result: CombineResult,
    error: np.ndarray,
    dq: np.ndarray,
    inspected: list[Inspected],
    settings: MasterSettings,
    read_noise_e: float,
):
    values = result.data[dq == 0]
    statistics = {
        "median": float(np.median(values)),
        "robust_std": float(mad_std(values)),
        "read_noise_e": read_noise_e,
    }
    return result.data, error, statistics


def _finish_dark(
    result: CombineResult,
    error: np.ndarray,
    dq: np.ndarray,
    inspected: list[Inspected],
    settings: MasterSettings,
    read_noise_e: float,
):
    good = dq == 0
    values = result.data[good]
    centre = float(np.median(values))
    spread = float(mad_std(values))
    hot = (result.data > centre + settings.hot_sigma * max(spread, 1e-6)) & good
    dq[hot] |= np.uint16(DQ.HOT)
    statistics = {
        "median": centre,
        "robust_std": spread,
        "hot_pixels": float(hot.sum()),
        "median_error": float(np.median(error[good])) if good.any() else float("nan"),
    }
    return result.data, error, statistics


def _finish_flat(
    result: CombineResult,
    error: np.ndarray,
    dq: np.ndarray,
    inspected: list[Inspected],
    settings: MasterSettings,
    read_noise_e: float,
):
    good = dq == 0
    level = calibrate.illuminated_level(result.data, threshold=settings.flat_threshold)
    data = calibrate.normalise_flat(result.data, level)
    error = (error / np.float32(level)).astype(np.float32)
    dq[(data < 0.5) & good] |= np.uint16(DQ.LOW_RESPONSE)
    dq[(data > 1.5) & good] |= np.uint16(DQ.HIGH_RESPONSE)
    finite = data[np.isfinite(data)]
    statistics = {
        "median": float(np.median(finite)),
        "illuminated_level": float(calibrate.illuminated_level(data, threshold=settings.flat_threshold)),
        "bad_fraction": float(np.mean(dq != 0)),
        "mean_input_level_e": float(np.mean([item.level for item in inspected])),
    }
    return data, error, statistics


FINISH = {"bias": _finish_bias, "dark": _finish_dark, "flat": _finish_flat}


def noise_model(
    kind: Kind, instrument: Instrument, geometry: Geometry, inspected: list[Inspected]
) -> NoiseModel:
    """The noise of one calibrated value of one frame, in the unit the frames are combined in.

    Every pixel has the read noise, and the error of its row's overscan level (the median of the
    overscan columns: (pi/2) RN^2 / columns); bias frames have no other noise; darks add the Poisson
    noise of their dark current (in e-/s over t seconds: variance x / t; darks that include the bias
    count it above their median level, the pedestal); flats scaled to 1 by their level L add their
    light's (variance x / L).
    """
    floor = instrument.read_noise**2
    if geometry.overscan is not None:
        columns = geometry.overscan[1].stop - geometry.overscan[1].start
        floor *= 1.0 + (np.pi / 2.0) / columns
    if kind == "bias":
        return NoiseModel(floor)
    if kind == "dark" and instrument.darks_include_bias:
        return NoiseModel(floor, 1.0, float(np.median([item.level for item in inspected])))
    if kind == "dark":
        t = float(np.median([item.frame.exptime for item in inspected]))
        return NoiseModel(floor / t**2, 1.0 / t)
    level = float(np.mean([item.level for item in inspected]))
    return NoiseModel(floor / level**2, 1.0 / level)


def master_error(
    kind: Kind,
    result: CombineResult,
    noise: NoiseModel,
    settings: MasterSettings,
    inspected: list[Inspected],
    bias: Master | None,
    dark: Master | None,
) -> np.ndarray:
    """The standard error of a master (in the unit it was combined in), from the noise model rather
    than the scatter of a few values (which is 0 where five integers happen to agree): the noise of
    one value over sqrt(frames used), sqrt(pi/2) more for a median, plus the error of the masters
    subtracted from every frame alike (they do not average down)."""
    n = np.where(result.n_used > 0, result.n_used, np.nan)
    variance = noise.sigma(result.data) ** 2 / n
    if settings.method == "median":
        variance *= np.pi / 2.0
    exptimes = np.array([item.frame.exptime for item in inspected])
    if kind == "dark" and bias is not None and not noise.offset:
        variance += (bias.error / float(np.median(exptimes))) ** 2
    if kind == "flat":
        level = float(np.mean([item.level for item in inspected]))
        shared = np.zeros_like(variance)
        if bias is not None:
            shared += bias.error.astype(np.float64) ** 2
        if dark is not None:
            shared += (dark.error.astype(np.float64) * float(np.mean(exptimes))) ** 2
        variance += shared / level**2
    return np.sqrt(variance).astype(np.float32)


def build_master(
    kind: Kind,
    frames: list[InputFrame],
    reader: FrameReader,
    instrument: Instrument,
    settings: MasterSettings = MasterSettings(),
    *,
    bias: Master | None = None,
    dark: Master | None = None,
) -> MasterProduct | NoMaster:
    """Build one master from raw frames of one instrument and calibration key.

    ``bias`` (e-) is subtracted from darks and flats, ``dark`` (e-/s) scaled and subtracted from
    flats; both on the trimmed imaging area, their errors propagated into the master's. Returns
    :class:`NoMaster` with the reason when fewer than ``settings.min_frames`` frames survive the
    rejections.
    """
    rejected: list[tuple[str, str]] = []
    candidates = _majority_shape(_metadata_survivors(kind, frames, rejected), rejected)
    if not candidates:
        return NoMaster(kind, "no usable frames", rejected, len(frames))
    geometry = instrument.geometry(candidates[0].shape, candidates[0].binning)
    problem = _geometry_problem(geometry, candidates[0].shape, instrument, bias, dark)
    if problem is not None:
        return NoMaster(kind, problem, rejected, len(frames))
    calibrator = _Calibrator(
        kind, instrument, geometry, settings, bias.data if bias else None, dark.data if dark else None
    )
    inspected, read_noise_e = _inspect(candidates, reader, calibrator, kind, instrument, settings, rejected)
    if len(inspected) < settings.min_frames:
        return NoMaster(
            kind,
            f"not enough frames: {len(inspected)} usable of {len(frames)}, need {settings.min_frames}",
            rejected,
            len(frames),
        )
    image_shape = geometry.imaging_shape
    scales = 1.0 / np.array([item.level for item in inspected]) if kind == "flat" else None
    noise = noise_model(kind, instrument, geometry, inspected)
    result = _combine(inspected, reader, calibrator, image_shape, settings, scales, noise)
    dq = _coverage_flags(result.n_used, image_shape)
    error = master_error(kind, result, noise, settings, inspected, bias, dark)
    data, error, statistics = FINISH[kind](result, error, dq, inspected, settings, read_noise_e)
    exptime = float(inspected[0].frame.exptime) if kind == "dark" and instrument.darks_include_bias else 0.0
    return MasterProduct(
        kind=kind,
        master=Master(data, error, dq, exptime),
        n_used=result.n_used,
        inputs=[item.frame for item in inspected],
        rejected=rejected,
        statistics={"n_frames": float(len(inspected)), **statistics},
    )


def _metadata_survivors(
    kind: Kind, frames: list[InputFrame], rejected: list[tuple[str, str]]
) -> list[InputFrame]:
    """The frames no metadata rule of ``kind`` rejects (the others go to ``rejected``)."""
    survivors = []
    for frame in frames:
        reason = next((r for r in (rule(frame) for rule in METADATA_RULES[kind]) if r), None)
        if reason:
            rejected.append((frame.name, reason))
        else:
            survivors.append(frame)
    return survivors


def _geometry_problem(
    geometry: Geometry | None,
    raw_shape: tuple[int, int],
    instrument: Instrument,
    bias: Master | None,
    dark: Master | None,
) -> str | None:
    """Why frames of this readout cannot make a master with these masters, or None."""
    if geometry is None:
        return f"shape {raw_shape} is not a readout of {instrument.name}"
    image_shape = geometry.imaging_shape
    for name, calibration in (("bias", bias), ("dark", dark)):
        if calibration is not None and calibration.data.shape != image_shape:
            return f"the master {name} has shape {calibration.data.shape}, the frames {image_shape}"
    return None


def _combine(
    inspected: list[Inspected],
    reader: FrameReader,
    calibrator: _Calibrator,
    image_shape: tuple[int, int],
    settings: MasterSettings,
    scales: np.ndarray | None,
    noise: NoiseModel,
) -> CombineResult:
    """Combine the inspected frames' calibrated values (times ``scales`` when given), row block by
    row block."""

    def read_block(k: int, r0: int, r1: int) -> np.ndarray:
        item = inspected[k]
        raw_rows = reader.read_rows(item.frame, r0, r1)
        return calibrator.rows_in_electrons(raw_rows, item.overscan, r0, r1, item.frame.exptime)

    return combine_blocks(
        read_block,
        len(inspected),
        image_shape,
        settings.method,
        memory_budget=settings.memory_budget,
        sigma_low=settings.sigma,
        sigma_high=settings.sigma,
        max_iters=settings.max_iters,
        scale=settings.scale,
        scales=scales,
        noise=noise if settings.scale == "model" else None,
    )


def _coverage_flags(n_used: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """A master's DQ plane with its pixels that no frame (NO_DATA) or a single one (LOW_COUNT) made."""
    dq = np.zeros(image_shape, dtype=np.uint16)
    dq[n_used == 0] |= np.uint16(DQ.NO_DATA)
    dq[n_used < 2] |= np.uint16(DQ.LOW_COUNT)
    return dq
