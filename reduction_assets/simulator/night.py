"""A seeded, deterministic CCD night simulator for demos, tests and benchmarks.

For any registered instrument it writes one night of raw frames in that camera's own header
convention (keyword names, frame-type vocabulary, filter names, binning keywords, overscan side):
bias frames, darks, twilight flats per filter, and dithered science sequences of several targets in
several filters. Beside them it writes ``truth.npz`` with what was injected, so tests can compare
reduced products with the truth.

The signal model, per imaging pixel, in electrons::

    e = Poisson((sky + stars) * flat * t + dark_rate * t)          (science)
    e = Poisson(flat_level * flat + dark_rate * t)                  (flat)
    e = Poisson(dark_rate * t)                                      (dark, bias with t = 0)
    ADU = (e + cosmic rays) / gain + bias(x) + offset_frame + N(0, read_noise / gain)

clipped to [0, min(saturation, 65535)] and rounded to unsigned 16-bit integers, as cameras write them.
Overscan columns carry ``bias_level + offset_frame + N(0, read_noise / gain)``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.wcs import WCS

from reduction_assets.instruments import Instrument

TRUTH_NAME = "truth.npz"
REFERENCE_NAME = (
    "reference.csv"  # the field's photometric reference catalogue (see reduction_assets.tasks.reference)
)
# Magnitude of a star giving 1 e-/s on the simulated detector, in every filter: the zero point the
# quality metrics should measure (the registry's quality.zero_points of the simulated cameras).
SIMULATED_ZERO_POINT = 25.0
_ERF = np.vectorize(math.erf)


@dataclass(frozen=True)
class Target:
    name: str
    ra: float  # degrees
    dec: float  # degrees


DEFAULT_TARGETS = (
    Target("NGC 253 field", 11.888, -25.288),
    Target("SN 2026xyz/host", 53.400, -36.141),
    Target("M 74", 24.174, 15.783),
)


# The night's schedule, in seconds after the local noon that starts it.
BIAS_START = 4 * 3600
DARKS_START = BIAS_START + 1800
FLATS_START = 6 * 3600 + 1800  # dusk
SCIENCE_START, SCIENCE_END = 8 * 3600, 16 * 3600
BIAS_SPACING = 30
GAP = 20  # seconds between twilight flats
DARK_GAP = 30  # seconds between darks
FIRST_FLAT_EXPTIME, FLAT_EXPTIME_GROWTH = 2.0, 1.6  # the sky darkens: longer exposures, same level
MAX_EXPTIME = 3600.0
MIN_WINDOW = 32  # unbinned pixels: room for stars and dithers


def flat_exptime(index: int) -> float:
    return FIRST_FLAT_EXPTIME * FLAT_EXPTIME_GROWTH**index


def flat_sequence_seconds(n_flat: int) -> float:
    """Duration of one filter's twilight flats, gaps included."""
    return sum(flat_exptime(i) + GAP for i in range(n_flat))


def max_flats(available_seconds: float, n_filters: int) -> int:
    n = 0
    while n_filters * flat_sequence_seconds(n + 1) <= available_seconds:
        n += 1
    return n


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that shapes a simulated night. Units: ADU, electrons (e), seconds, pixels."""

    size: tuple[int, int] | None = None  # unbinned imaging area (ny, nx); None: smallest readout
    binning: tuple[int, int] = (1, 1)
    seed: int = 0
    n_bias: int = 5
    n_dark: int = 5
    dark_exptime: float = 300.0
    n_flat: int = 5  # per filter
    flat_level: float = 20000.0  # e per pixel at the centre of the field
    filters: tuple[str, ...] | None = None  # normalised names; None: the instrument's defaults
    n_targets: int = 2
    n_dither: int = 3  # per target and filter
    science_exptime: float = 60.0
    bias_level: float = 1000.0  # ADU
    bias_column_amplitude: float = 3.0  # ADU, fixed column pattern
    frame_bias_jitter: float = 2.0  # ADU, frame-to-frame bias level change (tracked by the overscan)
    dark_rate: float = 0.01  # e/s/pixel
    hot_pixel_fraction: float = 1e-3
    hot_pixel_rate: tuple[float, float] = (2.0, 20.0)  # e/s
    vignetting: float = 0.15  # fractional loss at the corners
    pixel_response_rms: float = 0.01
    n_bad_columns: int = 2
    bad_column_response: float = 0.2
    sky_rate: float = 20.0  # e/s/pixel
    cosmic_ray_rate: float = 2e-5  # hits per pixel per second
    cosmic_ray_electrons: tuple[float, float] = (1500.0, 20000.0)
    fwhm: float = 3.0  # pixels (binned)
    stars_per_10k_pixels: float = 25.0
    star_rate: tuple[float, float] = (50.0, 30000.0)  # e/s, log-uniform
    dither_step: float = 8.0  # pixels
    pointing_jitter: float = 0.5  # pixels rms
    drifts: tuple[str, ...] = ()  # names of DRIFTS applied (recorded in the truth)

    def validate(self, instrument: Instrument) -> tuple[int, int]:
        """Imaging size to use; raises ValueError for contradictions with the instrument and for
        nights that cannot happen (exposures that overlap or do not fit their part of the night)."""
        size = tuple(self.size) if self.size else min(instrument.readout_sizes, key=lambda s: s[0] * s[1])
        if size not in instrument.readout_sizes and not (
            instrument.fits_window(size) and min(size) >= MIN_WINDOW
        ):
            listed = ", ".join(f"{ny}x{nx}" for ny, nx in instrument.readout_sizes)
            windows = (
                f", or a window of at least {MIN_WINDOW}x{MIN_WINDOW} within the largest"
                if instrument.windows
                else ""
            )
            raise ValueError(
                f"size {size[0]}x{size[1]} is not a readout of {instrument.name} ({listed}{windows})"
            )
        if tuple(self.binning) not in instrument.binnings:
            raise ValueError(f"binning {self.binning} is not offered by {instrument.name}")
        for name in ("n_bias", "n_dark", "n_flat", "n_targets", "n_dither"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.n_targets > len(DEFAULT_TARGETS):
            raise ValueError(f"at most {len(DEFAULT_TARGETS)} targets")
        for name in ("dark_exptime", "science_exptime"):
            if not 0 < getattr(self, name) <= MAX_EXPTIME:
                raise ValueError(f"{name} must be within 0..{MAX_EXPTIME:g} s")
        self._check_schedule(len(self.filters or DEFAULT_FILTERS.get(instrument.name, ("clear",))))
        return size  # type: ignore[return-value]

    def _check_schedule(self, n_filters: int) -> None:
        """Each block of the night must end before the next begins (see :func:`simulate_night`)."""
        blocks = [
            (
                "bias frames",
                self.n_bias * BIAS_SPACING,
                DARKS_START - BIAS_START,
                f"--n-bias at most {(DARKS_START - BIAS_START) // BIAS_SPACING}",
            ),
            (
                "darks",
                self.n_dark * (self.dark_exptime + DARK_GAP),
                FLATS_START - DARKS_START,
                "fewer or shorter darks",
            ),
            (
                "twilight flats",
                n_filters * flat_sequence_seconds(self.n_flat),
                SCIENCE_START - FLATS_START,
                f"--n-flat at most {max_flats(SCIENCE_START - FLATS_START, n_filters)} with {n_filters} "
                "filters",
            ),
        ]
        for what, needed, available, advice in blocks:
            if needed > available:
                raise ValueError(
                    f"the {what} would take {needed / 3600:.1f} h, but the night has "
                    f"{available / 3600:.1f} h for them: {advice}"
                )
        n_science = self.n_targets * n_filters * self.n_dither
        if n_science and self.science_exptime > (SCIENCE_END - SCIENCE_START) / n_science:
            raise ValueError(
                f"{n_science} science exposures of {self.science_exptime:g} s do not fit "
                f"the {(SCIENCE_END - SCIENCE_START) / 3600:g} h of the night"
            )


DEFAULT_FILTERS = {"lcosim": ("gp", "rp"), "noirsim": ("V", "R")}

# Drifts a night can be given, to test quality checks and plots against a known truth.
BIAS_JUMP_ADU = 60.0
BAD_SEEING_ARCSEC = 4.0
HOT_PIXEL_STORM_FACTOR = 20.0
DRIFTS = {
    "bias-jump": f"raw bias level {BIAS_JUMP_ADU:g} ADU above the configured one",
    "bad-seeing": f"stellar FWHM of {BAD_SEEING_ARCSEC:g} arcsec (cameras with a pixel scale)",
    "hot-pixel-storm": f"{HOT_PIXEL_STORM_FACTOR:g} times as many hot pixels",
}


def with_drifts(
    config: SimulationConfig, instrument: Instrument, drifts: tuple[str, ...]
) -> SimulationConfig:
    """``config`` with the named :data:`DRIFTS` applied; raises ValueError for unknown names."""
    unknown = [name for name in drifts if name not in DRIFTS]
    if unknown:
        raise ValueError(f"unknown drift {', '.join(unknown)}; known: {', '.join(DRIFTS)}")
    changes: dict[str, Any] = {"drifts": tuple(config.drifts) + tuple(drifts)}
    if "bias-jump" in drifts:
        changes["bias_level"] = config.bias_level + BIAS_JUMP_ADU
    if "bad-seeing" in drifts:
        if not instrument.pixel_scale:
            raise ValueError(f"{instrument.name} has no pixel scale: a seeing in arcsec means nothing")
        changes["fwhm"] = BAD_SEEING_ARCSEC / (instrument.pixel_scale * config.binning[0])
    return dataclasses.replace(config, **changes)


@dataclass
class FrameTruth:
    name: str
    frame_type: str
    filter: str | None
    exptime: float
    date_obs: str
    bias_offset: float  # ADU
    target: str | None = None
    crval: tuple[float, float] | None = None
    crpix: tuple[float, float] | None = None
    n_cosmic_rays: int = 0


@dataclass
class SimulatedNight:
    """What :func:`simulate_night` wrote: the frame paths and the truth."""

    frames: list[Path]
    truth_path: Path
    truth: Truth


@dataclass
class Truth:
    """The injected signals. Arrays are on the binned imaging area unless said otherwise."""

    instrument: str
    night: str
    gain: float
    read_noise: float
    bias_level: float
    bias: np.ndarray  # ADU, full raw geometry (imaging + overscan), without per-frame offsets
    dark_rate: np.ndarray  # e/s
    flats: dict[str, np.ndarray]  # per filter, normalised to median 1
    bad_columns: np.ndarray  # column indices in the imaging area
    hot_pixels: np.ndarray  # (n, 2) y, x
    stars: np.ndarray  # structured: target, ra, dec, rate_<filter> (e/s)
    cosmic_rays: np.ndarray  # structured: frame, y, x, electrons (raw-frame pixel coordinates)
    frames: list[FrameTruth] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        meta = {
            "instrument": self.instrument,
            "night": self.night,
            "gain": self.gain,
            "read_noise": self.read_noise,
            "bias_level": self.bias_level,
            "frames": [asdict(f) for f in self.frames],
            "config": self.config,
            "filters": sorted(self.flats),
        }
        arrays = {f"flat_{name}": flat for name, flat in self.flats.items()}
        np.savez_compressed(
            path,
            meta=np.array(json.dumps(meta)),
            bias=self.bias,
            dark_rate=self.dark_rate,
            bad_columns=self.bad_columns,
            hot_pixels=self.hot_pixels,
            stars=self.stars,
            cosmic_rays=self.cosmic_rays,
            **arrays,
        )

    @staticmethod
    def load(path: Path) -> Truth:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return Truth(
                instrument=meta["instrument"],
                night=meta["night"],
                gain=meta["gain"],
                read_noise=meta["read_noise"],
                bias_level=meta["bias_level"],
                bias=data["bias"],
                dark_rate=data["dark_rate"],
                flats={f: data[f"flat_{f}"] for f in meta["filters"]},
                bad_columns=data["bad_columns"],
                hot_pixels=data["hot_pixels"],
                stars=data["stars"],
                cosmic_rays=data["cosmic_rays"],
                frames=[
                    FrameTruth(
                        **{
                            **f,
                            "crval": tuple(f["crval"]) if f["crval"] else None,
                            "crpix": tuple(f["crpix"]) if f["crpix"] else None,
                        }
                    )
                    for f in meta["frames"]
                ],
                config=meta["config"],
            )


def _raw_value(mapping: dict[str, str], normalised: str) -> str:
    """The first raw header value a camera uses for a normalised name."""
    for raw, value in mapping.items():
        if value == normalised:
            return raw
    return normalised


def _gaussian_stamp(x: float, y: float, sigma: float, half: int) -> tuple[np.ndarray, int, int]:
    """Pixel-integrated unit-flux Gaussian around (x, y); returns stamp and its lower-left pixel."""
    x0, y0 = int(round(x)) - half, int(round(y)) - half
    edges_x = np.arange(x0, x0 + 2 * half + 2) - 0.5
    edges_y = np.arange(y0, y0 + 2 * half + 2) - 0.5
    cx = np.diff(_ERF((edges_x - x) / (sigma * math.sqrt(2)))) / 2
    cy = np.diff(_ERF((edges_y - y) / (sigma * math.sqrt(2)))) / 2
    return np.outer(cy, cx), x0, y0


def _render_stars(shape, xs, ys, fluxes, sigma) -> np.ndarray:
    image = np.zeros(shape)
    half = int(math.ceil(5 * sigma))
    ny, nx = shape
    for x, y, flux in zip(xs, ys, fluxes):
        if not (-half <= x < nx + half and -half <= y < ny + half):
            continue
        stamp, x0, y0 = _gaussian_stamp(x, y, sigma, half)
        ys0, ys1 = max(y0, 0), min(y0 + stamp.shape[0], ny)
        xs0, xs1 = max(x0, 0), min(x0 + stamp.shape[1], nx)
        if ys0 >= ys1 or xs0 >= xs1:
            continue
        image[ys0:ys1, xs0:xs1] += flux * stamp[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0]
    return image


def _sexagesimal(degrees: float, hours: bool) -> str:
    angle = Angle(degrees / 15.0 if hours else degrees, unit="hourangle" if hours else "deg")
    return angle.to_string(sep=":", precision=2 if hours else 1, pad=True, alwayssign=not hours)


class _Night:
    """The state of one simulated night (fixed detector, varying exposures)."""

    def __init__(self, instrument: Instrument, night: dt.date, config: SimulationConfig):
        self.instrument = instrument
        self.night = night
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        size = config.validate(instrument)
        bx, by = config.binning
        self.bx, self.by = bx, by
        self.shape = (size[0] // by, size[1] // bx)
        self.geometry = instrument.geometry(
            (self.shape[0], self.shape[1] + (instrument.overscan.width if instrument.overscan else 0)),
            (bx, by),
        )
        self.filters = config.filters or DEFAULT_FILTERS.get(instrument.name, ("clear",))
        self.saturation = min(instrument.saturation, 65535.0)
        self._build_detector()
        self._build_sky()

    # --- the fixed detector ------------------------------------------------------------------
    def _build_detector(self) -> None:
        c, rng, (ny, nx) = self.config, self.rng, self.shape
        raw_shape = self.geometry.raw_shape
        self.bias = np.full(raw_shape, c.bias_level)
        self.bias[self.geometry.imaging] += c.bias_column_amplitude * rng.standard_normal(nx)[None, :]
        dark = np.full(self.shape, c.dark_rate * self.bx * self.by)
        n_hot = int(round(c.hot_pixel_fraction * ny * nx))
        flat_index = rng.choice(ny * nx, size=n_hot, replace=False)
        self.hot_pixels = np.column_stack(np.unravel_index(flat_index, self.shape))
        dark.flat[flat_index] = rng.uniform(*c.hot_pixel_rate, size=n_hot)
        if "hot-pixel-storm" in c.drifts:
            # Drawn apart from the night's generator: the stars, noise and cosmic rays stay those
            # of the same seed without the storm.
            storm = np.random.default_rng([c.seed, 1])
            n_storm = int(round((HOT_PIXEL_STORM_FACTOR - 1) * c.hot_pixel_fraction * ny * nx))
            extra = storm.choice(ny * nx, size=n_storm, replace=False)
            dark.flat[extra] = storm.uniform(*c.hot_pixel_rate, size=n_storm)
            self.hot_pixels = np.column_stack(np.unravel_index(np.union1d(flat_index, extra), self.shape))
        self.dark_rate = dark
        yy, xx = np.mgrid[0:ny, 0:nx]
        r2 = ((yy - (ny - 1) / 2) / (ny / 2)) ** 2 + ((xx - (nx - 1) / 2) / (nx / 2)) ** 2
        vignette = 1.0 - c.vignetting * r2 / 2.0
        prnu = 1.0 + c.pixel_response_rms * rng.standard_normal(self.shape)
        self.bad_columns = np.sort(rng.choice(np.arange(2, nx - 2), size=c.n_bad_columns, replace=False))
        self.flats = {}
        for i, name in enumerate(self.filters):
            # Dust and coating differ slightly between filters: a gentle tilt per filter.
            tilt = 1.0 + 0.02 * (i + 1) * (xx / nx - 0.5)
            flat = vignette * prnu * tilt
            flat[:, self.bad_columns] *= c.bad_column_response
            self.flats[name] = flat / np.median(flat)

    def _build_sky(self) -> None:
        c, rng, (ny, nx) = self.config, self.rng, self.shape
        scale = (self.instrument.pixel_scale or 1.0) * self.bx / 3600.0  # deg/pixel
        self.pixel_scale_deg = scale
        n_stars = max(3, int(round(c.stars_per_10k_pixels * ny * nx / 1e4)))
        margin = 2 * c.dither_step + 10
        rows = []
        self.targets = DEFAULT_TARGETS[: c.n_targets]
        for target in self.targets:
            dx = rng.uniform(-nx / 2 - margin, nx / 2 + margin, n_stars)
            dy = rng.uniform(-ny / 2 - margin, ny / 2 + margin, n_stars)
            cosd = math.cos(math.radians(target.dec))
            ras = target.ra - dx * scale / cosd
            decs = target.dec + dy * scale
            rate = np.exp(rng.uniform(*np.log(c.star_rate), n_stars))
            colours = rng.uniform(0.7, 1.4, n_stars)
            for j in range(n_stars):
                row = [target.name, ras[j], decs[j]]
                row += [rate[j] * colours[j] ** k for k in range(len(self.filters))]
                rows.append(tuple(row))
        dtype = [("target", "U32"), ("ra", "f8"), ("dec", "f8")]
        dtype += [(f"rate_{name}", "f8") for name in self.filters]
        self.stars = np.array(rows, dtype=dtype)
        self.cosmic_rays: list[tuple[int, int, int, float]] = []

    # --- exposures ---------------------------------------------------------------------------
    def _cosmic_rays(self, index: int, exptime: float, geometry_offset: int) -> np.ndarray:
        c, rng, (ny, nx) = self.config, self.rng, self.shape
        hits = np.zeros(self.shape)
        n = rng.poisson(c.cosmic_ray_rate * ny * nx * max(exptime, 0.0))
        for _ in range(n):
            y, x = int(rng.integers(0, ny)), int(rng.integers(0, nx))
            length = int(rng.integers(1, 4))
            direction = rng.integers(0, 2)
            total = rng.uniform(*c.cosmic_ray_electrons)
            for step in range(length):
                yy, xx = (y + step, x) if direction else (y, x + step)
                if yy < ny and xx < nx:
                    hits[yy, xx] += total / length
                    self.cosmic_rays.append((index, yy, xx + geometry_offset, total / length))
        return hits

    def expose(
        self, index: int, electrons_rate: np.ndarray | float, exptime: float, extra: np.ndarray | float = 0.0
    ) -> tuple[np.ndarray, float, int]:
        c, rng = self.config, self.rng
        mean = np.asarray(electrons_rate) * exptime + extra + self.dark_rate * exptime
        electrons = rng.poisson(np.maximum(mean, 0.0)).astype(np.float64)
        x_offset = self.geometry.imaging[1].start
        crs = self._cosmic_rays(index, exptime, x_offset)
        n_cr = int(np.count_nonzero(crs))
        electrons += crs
        gain, rn = self.instrument.gain, self.instrument.read_noise
        offset = float(c.frame_bias_jitter * rng.standard_normal())
        adu = self.bias + offset + rng.standard_normal(self.geometry.raw_shape) * (rn / gain)
        adu[self.geometry.imaging] += electrons / gain
        adu = np.clip(np.rint(adu), 0, self.saturation).astype(np.uint16)
        return adu, offset, n_cr


def _wcs_header(crval, crpix, scale) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = crval
    wcs.wcs.crpix = crpix
    wcs.wcs.cd = np.array([[-scale, 0.0], [0.0, scale]])
    return wcs.to_header()


def simulate_night(
    instrument: Instrument, night: dt.date, out: Path, config: SimulationConfig = SimulationConfig()
) -> SimulatedNight:
    """Write one night of raw frames for ``instrument`` into ``out`` and the truth beside them.

    Deterministic: the same instrument, night and config (seed included) give byte-identical files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim = _Night(instrument, night, config)
    c = config
    noon = instrument.site.local_noon_utc(night).replace(tzinfo=None)
    frames: list[Path] = []
    truths: list[FrameTruth] = []
    (ny, nx) = sim.shape
    x0 = sim.geometry.imaging[1].start

    def write(
        kind: str,
        data: np.ndarray,
        when: dt.datetime,
        exptime: float,
        filt: str | None,
        obj: str | None,
        wcs: fits.Header | None,
        offset: float,
        n_cr: int,
        target=None,
        crval=None,
        crpix=None,
    ) -> None:
        seq = len(frames) + 1
        name = f"{instrument.name}_{night.strftime('%Y%m%d')}_{seq:04d}_{kind}.fits"
        header = fits.Header()
        kw = instrument.keywords
        header[kw.get("instrument", "INSTRUME")] = instrument.match[0]
        header[kw["frame_type"]] = _raw_value(dict(instrument.frame_types), kind)
        header[kw["date_obs"]] = when.isoformat(timespec="milliseconds")
        if "day_obs" in kw:
            header[kw["day_obs"]] = night.strftime("%Y%m%d")
        header[kw["exptime"]] = (exptime, "[s] exposure time")
        if filt is not None and "filter" in kw:
            header[kw["filter"]] = _raw_value(dict(instrument.filters), filt)
        if obj is not None and "object" in kw:
            header[kw["object"]] = obj
        if "binning" in kw:
            header[kw["binning"]] = f"{sim.bx} {sim.by}"
        else:
            header[kw["binning_x"]] = sim.bx
            header[kw["binning_y"]] = sim.by
        header[kw.get("gain", "GAIN")] = (instrument.gain, "[e-/ADU]")
        header["RDNOISE"] = (instrument.read_noise, "[e-] read noise")
        header["SATURATE"] = (sim.saturation, "[ADU]")
        if sim.geometry.overscan is not None:
            header["BIASSEC"] = sim.geometry.fits_section(sim.geometry.overscan)
        header["TRIMSEC"] = sim.geometry.fits_section(sim.geometry.imaging)
        header["DATASEC"] = header["TRIMSEC"]
        header["OBSERVAT"] = instrument.site.name
        if wcs is not None:
            target_obj = next(t for t in sim.targets if t.name == obj)
            if "ra" in kw:
                header[kw["ra"]] = _sexagesimal(target_obj.ra, hours=True)
                header[kw["dec"]] = _sexagesimal(target_obj.dec, hours=False)
            header.extend(wcs, update=True)
        header["ORIGIN"] = "reduction_assets simulator"
        header["SIMSEED"] = (c.seed, "simulator seed")
        hdu = fits.PrimaryHDU(data=data, header=header)
        path = out / name
        hdu.writeto(path, overwrite=True, output_verify="exception")
        frames.append(path)
        truths.append(
            FrameTruth(
                name=name,
                frame_type=kind,
                filter=filt,
                exptime=exptime,
                date_obs=when.isoformat(timespec="milliseconds"),
                bias_offset=offset,
                target=target,
                crval=crval,
                crpix=crpix,
                n_cosmic_rays=n_cr,
            )
        )

    index = 0
    start = noon + dt.timedelta(seconds=BIAS_START)  # afternoon calibrations at 16:00 local
    bias_frames = 0 if instrument.darks_include_bias else c.n_bias
    for i in range(bias_frames):
        data, offset, n_cr = sim.expose(index, 0.0, 0.0)
        write(
            "bias", data, start + dt.timedelta(seconds=BIAS_SPACING * i), 0.0, None, None, None, offset, n_cr
        )
        index += 1
    start = noon + dt.timedelta(seconds=DARKS_START)
    for i in range(c.n_dark):
        data, offset, n_cr = sim.expose(index, 0.0, c.dark_exptime)
        write(
            "dark",
            data,
            start + dt.timedelta(seconds=(c.dark_exptime + DARK_GAP) * i),
            c.dark_exptime,
            None,
            None,
            None,
            offset,
            n_cr,
        )
        index += 1
    start = noon + dt.timedelta(seconds=FLATS_START)
    for filt in sim.filters:
        for i in range(c.n_flat):
            exptime = flat_exptime(i)
            data, offset, n_cr = sim.expose(index, 0.0, exptime, extra=c.flat_level * sim.flats[filt])
            write("flat", data, start, exptime, filt, None, None, offset, n_cr)
            start += dt.timedelta(seconds=exptime + GAP)
            index += 1
    science = [(t, f, d) for t in sim.targets for f in sim.filters for d in range(c.n_dither)]
    begin, end = noon + dt.timedelta(seconds=SCIENCE_START), noon + dt.timedelta(seconds=SCIENCE_END)
    spacing = (end - begin) / max(len(science), 1)
    sigma = c.fwhm / 2.3548
    crpix = (x0 + (nx + 1) / 2.0, (ny + 1) / 2.0)
    for k, (target, filt, dither) in enumerate(science):
        offset_px = np.array([(dither % 3) - 1, ((dither // 3) % 3) - 1]) * c.dither_step
        offset_px = offset_px + sim.rng.normal(0, c.pointing_jitter, 2)
        cosd = math.cos(math.radians(target.dec))
        crval = (
            target.ra - offset_px[0] * sim.pixel_scale_deg / cosd,
            target.dec + offset_px[1] * sim.pixel_scale_deg,
        )
        wcs_header = _wcs_header(crval, crpix, sim.pixel_scale_deg)
        mine = sim.stars[sim.stars["target"] == target.name]
        px, py = WCS(wcs_header).all_world2pix(mine["ra"], mine["dec"], 0)
        image = _render_stars(sim.shape, px - x0, py, mine[f"rate_{filt}"], sigma)
        rate = (c.sky_rate * sim.bx * sim.by + image) * sim.flats[filt]
        data, offset, n_cr = sim.expose(index, rate, c.science_exptime)
        write(
            "science",
            data,
            begin + spacing * k,
            c.science_exptime,
            filt,
            target.name,
            wcs_header,
            offset,
            n_cr,
            target=target.name,
            crval=tuple(float(v) for v in crval),
            crpix=tuple(float(v) for v in crpix),
        )
        index += 1

    cr = np.array(sim.cosmic_rays, dtype=[("frame", "i4"), ("y", "i4"), ("x", "i4"), ("electrons", "f8")])
    truth = Truth(
        instrument=instrument.name,
        night=night.isoformat(),
        gain=instrument.gain,
        read_noise=instrument.read_noise,
        bias_level=c.bias_level,
        bias=sim.bias,
        dark_rate=sim.dark_rate,
        flats=sim.flats,
        bad_columns=sim.bad_columns,
        hot_pixels=sim.hot_pixels,
        stars=sim.stars,
        cosmic_rays=cr,
        frames=truths,
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()},
    )
    truth_path = out / TRUTH_NAME
    truth.save(truth_path)
    _write_reference(out / REFERENCE_NAME, sim.stars, sim.filters)
    return SimulatedNight(frames=frames, truth_path=truth_path, truth=truth)


def _write_reference(path: Path, stars: np.ndarray, filters: tuple[str, ...]) -> None:
    """The stars of the night's fields as a reference catalogue: ra, dec (deg) and per filter the
    magnitude ``SIMULATED_ZERO_POINT - 2.5 log10(rate)`` of their e-/s."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["ra", "dec", *filters])
        for star in stars:
            mags = [SIMULATED_ZERO_POINT - 2.5 * math.log10(star[f"rate_{f}"]) for f in filters]
            writer.writerow([f"{star['ra']:.7f}", f"{star['dec']:.7f}", *(f"{m:.4f}" for m in mags)])
