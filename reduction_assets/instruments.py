"""Instrument registry: the YAML file of cameras turned into typed, validated records.

The registry is data, not code: header keyword names, the frame-type vocabulary, detector geometry and
noise properties of each camera live in ``support/defaults/instruments.yaml`` (or the file named by
``$REDUCTION_INSTRUMENTS``). Everything downstream asks an :class:`Instrument` rather than reading
headers by hand.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import yaml

FRAME_TYPES = ("bias", "dark", "flat", "science")
REGISTRY_ENV = "REDUCTION_INSTRUMENTS"


class RegistryError(ValueError):
    """The instrument registry file is malformed."""


SEVERITIES = ("warn", "error")


@dataclass(frozen=True)
class Threshold:
    """A quality check's limit and what failing it means: ``warn`` (shown, alerted) or ``error``
    (also blocks: a master failing an error check is marked bad and never used)."""

    limit: float
    severity: str


# The quality checks' thresholds, one entry per check, with their units. An instrument's `quality:`
# entry in the registry overrides them key by key (a number sets the limit, a mapping limit and
# severity); `zero_points` (mag of 1 e-/s, per filter) has no default: a camera without one gets
# its zero point measured and trended but not judged.
QUALITY_DEFAULTS: dict[str, Threshold] = {
    "read_noise": Threshold(0.25, "error"),  # master bias: fractional deviation from read_noise
    "bias_level_drift": Threshold(20.0, "warn"),  # ADU: night's raw bias level vs earlier nights
    "dark_current": Threshold(50.0, "error"),  # e-/s/pixel: median of a master dark
    "hot_pixels": Threshold(0.005, "warn"),  # fraction of a master dark's pixels that are hot
    "fwhm": Threshold(2.5, "warn"),  # arcsec: median FWHM of a night's science frames
    "flat_level": Threshold(0.01, "error"),  # master flat: |illuminated level - 1|
    "flat_bad_pixels": Threshold(0.05, "error"),  # fraction of a master flat's pixels flagged
    "zero_point": Threshold(0.3, "warn"),  # mag: |measured - nominal| zero point
}


@dataclass(frozen=True)
class QualityLimits:
    """An instrument's quality thresholds (:data:`QUALITY_DEFAULTS` merged with its registry entry)."""

    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: dict(QUALITY_DEFAULTS))
    zero_points: Mapping[str, float] = field(default_factory=dict)  # mag of 1 e-/s, per filter

    def __getitem__(self, check: str) -> Threshold:
        return self.thresholds[check]


def night_of(utc: dt.datetime, *, longitude: float | None = None, timezone: str | None = None) -> dt.date:
    """The observing night an exposure belongs to: the local date at the noon before it.

    Parameters
    ----------
    utc
        Start of the exposure, UTC (naive datetimes are taken as UTC).
    longitude
        Site longitude in degrees, east positive. Used as local mean solar time when no
        ``timezone`` is given.
    timezone
        IANA zone of the site (civil time, with daylight saving). Takes precedence over longitude.

    Every exposure between one local noon and the next shares a night, so a night that crosses
    UTC midnight (anywhere west of Greenwich, or late frames east of it) stays in one partition.
    """
    if utc.tzinfo is None:
        utc = utc.replace(tzinfo=dt.UTC)
    if timezone:
        local = utc.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    elif longitude is not None:
        local = utc.astimezone(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=longitude / 15.0)
    else:
        raise ValueError("night_of needs a site longitude or timezone")
    return (local - dt.timedelta(hours=12)).date()


@dataclass(frozen=True)
class Site:
    name: str
    longitude: float
    latitude: float | None = None
    timezone: str | None = None
    # Local time on the morning after a night when its calibration blocks are complete at the latest
    # (see reduction_assets.tasks.schedule).
    masters_at: dt.time = dt.time(9, 0)

    def night_of(self, utc: dt.datetime) -> dt.date:
        return night_of(utc, longitude=self.longitude, timezone=self.timezone)

    def local_noon_utc(self, night: dt.date) -> dt.datetime:
        """UTC time of the local noon that starts ``night``."""
        return self._utc(dt.datetime.combine(night, dt.time(12, 0)))

    def masters_due_utc(self, night: dt.date) -> dt.datetime:
        """UTC time of ``masters_at`` on the morning after ``night``."""
        return self._utc(dt.datetime.combine(night + dt.timedelta(days=1), self.masters_at))

    def _utc(self, local: dt.datetime) -> dt.datetime:
        if self.timezone:
            return local.replace(tzinfo=ZoneInfo(self.timezone)).astimezone(dt.UTC)
        return (local - dt.timedelta(hours=self.longitude / 15.0)).replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Overscan:
    """Serial overscan (or prescan) columns beside the imaging area, in binned pixels."""

    side: str  # "left" or "right"
    width: int


@dataclass(frozen=True)
class Geometry:
    """Where the imaging area and the overscan sit in one raw readout (0-based, end-exclusive)."""

    raw_shape: tuple[int, int]
    imaging: tuple[slice, slice]
    overscan: tuple[slice, slice] | None

    @property
    def imaging_shape(self) -> tuple[int, int]:
        """(rows, columns) of the trimmed imaging area."""
        rows, columns = self.imaging
        return rows.stop - rows.start, columns.stop - columns.start

    @staticmethod
    def fits_section(section: tuple[slice, slice]) -> str:
        """The section as a FITS/IRAF string ``[x1:x2,y1:y2]`` (1-based, inclusive)."""
        ys, xs = section
        return f"[{xs.start + 1}:{xs.stop},{ys.start + 1}:{ys.stop}]"


@dataclass(frozen=True)
class ReadoutShape:
    """A raw readout's shape in pixels (rows, columns): the one reader and writer of its label
    ``NYxNX``, as calibration keys and the catalog hold it (a window is another readout)."""

    ny: int
    nx: int

    @classmethod
    def parse(cls, label: str) -> ReadoutShape:
        try:
            ny, nx = (int(value) for value in label.lower().split("x"))
        except ValueError as err:
            raise ValueError(f"{label!r} is not a readout shape NYxNX, e.g. 1024x1056") from err
        return cls(ny, nx)

    @property
    def label(self) -> str:
        return f"{self.ny}x{self.nx}"


@dataclass(frozen=True)
class CalibrationKey:
    """What makes a master fit a frame: the one definition used both to group raw calibration
    frames into masters and to choose a master for a frame (BANZAI's calibration set criteria).

    ``filter`` is '' where it does not matter (bias, dark); ``exptime`` is 0 except for darks of
    cameras whose darks include the bias (they apply at their own exposure time only).
    """

    type: str
    binning: str
    readout: str  # ReadoutShape.label of the raw frames (a window is another readout)
    filter: str = ""
    exptime: float = 0.0

    def label(self) -> str:
        """``"1x1 128x144 rp"``, ``"1x1 510x765 120s"``: how a group is named in summaries."""
        parts = [self.binning, self.readout, self.filter, f"{self.exptime:g}s" if self.exptime else ""]
        return " ".join(part for part in parts if part)


MASTER_TYPES = ("bias", "dark", "flat")


@dataclass(frozen=True)
class ScienceMode:
    """How one kind of science frame is reduced: the masters it must have and those it may do
    without, and whether it is a spectrum."""

    name: str
    match: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # keyword -> values; {}: any
    required: tuple[str, ...] = MASTER_TYPES
    optional: tuple[str, ...] = ()
    spectrum: bool = False  # dispersed light: no source catalogue
    line_fwhm: float | None = None  # pixels, the sharpest line of a spectrum (cosmic-ray test)

    def matches(self, header: Mapping[str, Any]) -> bool:
        for keyword, values in self.match.items():
            value = header.get(keyword)
            if value is None or str(value).strip().lower() not in values:
                return False
        return True


IMAGING = ScienceMode("imaging")


@dataclass(frozen=True)
class Instrument:
    name: str
    description: str
    site: Site
    match: tuple[str, ...]
    keywords: Mapping[str, str]
    frame_types: Mapping[str, str]
    filters: Mapping[str, str]
    default_filter: str | None
    gain: float  # e-/ADU
    read_noise: float  # e-
    saturation: float  # ADU
    pixel_scale: float | None  # arcsec / unbinned pixel
    readout_sizes: tuple[tuple[int, int], ...]
    binnings: tuple[tuple[int, int], ...]
    overscan: Overscan | None
    darks_include_bias: bool
    # Known defects, [y0, y1, x0, x1] end-exclusive on the unbinned imaging area (the instrument's
    # bad-pixel mask; pixels flagged in masters are added per night).
    bad_regions: tuple[tuple[int, int, int, int], ...] = ()
    # The camera can read any window up to its largest readout (anchored at the chip's first pixel).
    windows: bool = False
    science_modes: tuple[ScienceMode, ...] = ()
    quality: QualityLimits = field(default_factory=QualityLimits)

    def science_mode(self, header: Mapping[str, Any]) -> ScienceMode:
        """The first of the camera's science modes whose header values match; imaging otherwise."""
        return next((mode for mode in self.science_modes if mode.matches(header)), IMAGING)

    def bad_pixel_mask(self, shape: tuple[int, int], binning: tuple[int, int]) -> np.ndarray:
        """Boolean mask (True = bad) of the trimmed imaging area of a frame of this binning."""
        bx, by = binning
        mask = np.zeros(shape, dtype=bool)
        for y0, y1, x0, x1 in self.bad_regions:
            mask[y0 // by : -(-y1 // by), x0 // bx : -(-x1 // bx)] = True
        return mask

    def calibration_key(
        self, kind: str, *, binning: str, readout: str, filter: str | None, exptime: float
    ) -> CalibrationKey:
        """The key of a master of ``kind`` made from, or used for, a frame with these properties
        (``readout``: the raw shape ``NYxNX``)."""
        return CalibrationKey(
            type=kind,
            binning=binning,
            readout=readout,
            filter=(filter or "") if kind == "flat" else "",
            exptime=float(exptime) if (kind == "dark" and self.darks_include_bias) else 0.0,
        )

    def keyword(self, quantity: str) -> str | None:
        """Header keyword this camera uses for a normalised quantity, or None."""
        return self.keywords.get(quantity)

    def frame_type(self, raw_value: str) -> str | None:
        """Normalised frame type (bias/dark/flat/science) of a raw header value, or None if unknown."""
        wanted = str(raw_value).strip().lower()
        for raw, normalised in self.frame_types.items():
            if raw.strip().lower() == wanted:
                return normalised
        return None

    def filter_name(self, raw_value: str | None) -> str | None:
        if raw_value is None or str(raw_value).strip() == "":
            return self.default_filter
        raw = str(raw_value).strip()
        return self.filters.get(raw, raw)

    def geometry(self, shape: tuple[int, int], binning: tuple[int, int]) -> Geometry | None:
        """Geometry of a raw frame of ``shape`` (ny, nx) read with ``binning`` (bx, by).

        Returns None when no readout size (or, for cameras with ``windows``, no window) of this
        camera produces that shape: such a frame is not from this camera (or is corrupt).
        """
        bx, by = binning
        if (bx, by) not in self.binnings:
            return None
        width = self.overscan.width if self.overscan else 0
        ny, nx = int(shape[0]), int(shape[1]) - width
        readouts = {(full_y // by, full_x // bx) for full_y, full_x in self.readout_sizes}
        if (ny, nx) not in readouts and not self.fits_window((ny * by, nx * bx)):
            return None
        rows = slice(0, ny)
        if self.overscan is None:
            return Geometry((ny, nx), (rows, slice(0, nx)), None)
        if self.overscan.side == "right":
            return Geometry((ny, nx + width), (rows, slice(0, nx)), (rows, slice(nx, nx + width)))
        return Geometry((ny, nx + width), (rows, slice(width, width + nx)), (rows, slice(0, width)))

    def fits_window(self, size: tuple[int, int]) -> bool:
        """Whether an unbinned imaging area (ny, nx) is a window this camera can read out."""
        ny, nx = size
        return self.windows and any(
            1 <= ny <= full_y and 1 <= nx <= full_x for full_y, full_x in self.readout_sizes
        )

    def expected_shapes(self, binning: tuple[int, int]) -> str:
        """The raw shapes (ny, nx) this camera writes at ``binning``, in words."""
        bx, by = binning
        width = self.overscan.width if self.overscan else 0
        listed = ", ".join(str((ny // by, nx // bx + width)) for ny, nx in self.readout_sizes)
        if self.windows:
            largest = max(self.readout_sizes, key=lambda s: s[0] * s[1])
            return f"{listed}, or any window up to {(largest[0] // by, largest[1] // bx + width)}"
        return listed


@dataclass(frozen=True)
class Registry:
    instruments: Mapping[str, Instrument]
    source: str

    @property
    def names(self) -> list[str]:
        return sorted(self.instruments)

    def __getitem__(self, name: str) -> Instrument:
        return self.instruments[name]

    def identify_header(self, header: Mapping[str, Any]) -> Instrument | None:
        """Identify the camera from a FITS header using each camera's own instrument keyword."""
        for instrument in self.instruments.values():
            key = instrument.keyword("instrument") or "INSTRUME"
            value = header.get(key)
            if value is not None and any(
                m.strip().lower() == str(value).strip().lower() for m in instrument.match
            ):
                return instrument
        return None


# Every key the registry knows, at each level: anything else is a typo that would otherwise be silently
# ignored (``darks_include_bais: true`` read as false).
INSTRUMENT_KEYS = {
    "description",
    "site",
    "match",
    "keywords",
    "frame_types",
    "filters",
    "default_filter",
    "gain",
    "read_noise",
    "saturation",
    "pixel_scale",
    "readout_sizes",
    "windows",
    "binnings",
    "overscan",
    "darks_include_bias",
    "bad_regions",
    "science_modes",
    "quality",
}
QUALITY_KEYS = {*QUALITY_DEFAULTS, "zero_points"}
MODE_KEYS = {"match", "required", "optional", "spectrum", "line_fwhm"}
SITE_KEYS = {"name", "longitude", "latitude", "timezone", "masters_at"}
OVERSCAN_KEYS = {"side", "width"}
# Normalised quantities a camera's header keywords can be mapped to.
QUANTITIES = {
    "instrument",
    "frame_type",
    "date_obs",
    "day_obs",
    "exptime",
    "filter",
    "object",
    "ra",
    "dec",
    "binning",
    "binning_x",
    "binning_y",
    "gain",
}


class _Entry:
    """Reads one instrument's YAML entry; every error names the file, the instrument and the key."""

    def __init__(self, source: str, name: str):
        self.source = source
        self.name = name

    def error(self, message: str) -> RegistryError:
        return RegistryError(f"{self.source}: instrument {self.name!r}: {message}")

    def known(self, mapping: Any, allowed: set[str], where: str) -> Mapping[str, Any]:
        if not isinstance(mapping, Mapping):
            raise self.error(f"{where} must be a mapping, got {type(mapping).__name__}")
        for key in mapping:
            if str(key) not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(allowed))}"
                raise self.error(f"unknown key {where + '.' if where != 'entry' else ''}{key}{hint}")
        return mapping

    def require(self, mapping: Mapping[str, Any], key: str, where: str = "") -> Any:
        if key not in mapping:
            raise self.error(f"missing {where}{key!r}")
        return mapping[key]

    def number(self, mapping: Mapping[str, Any], key: str, where: str = "") -> float:
        value = self.require(mapping, key, where)
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise self.error(f"{where}{key} = {value!r} is not a number") from err

    def flag(self, mapping: Mapping[str, Any], key: str, default: bool) -> bool:
        value = mapping.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{key} = {value!r} must be true or false")
        return value


def _local_time(reader: _Entry, value: Any) -> dt.time:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 09:00 as the sexagesimal number 540
        return dt.time(value // 60, value % 60)
    try:
        return dt.time.fromisoformat(str(value))
    except ValueError as err:
        raise reader.error(f"site.masters_at = {value!r} is not a local time HH:MM") from err


def _parse_instrument(source: str, name: str, raw_entry: Any) -> Instrument:
    reader = _Entry(source, name)
    entry = reader.known(raw_entry, INSTRUMENT_KEYS, "entry")
    site_entry = reader.known(reader.require(entry, "site"), SITE_KEYS, "site")
    timezone = site_entry.get("timezone")
    if timezone:
        try:
            ZoneInfo(timezone)
        except ZoneInfoNotFoundError as err:
            raise reader.error(f"unknown timezone {timezone!r}") from err
    site = Site(
        name=str(site_entry.get("name", name)),
        longitude=reader.number(site_entry, "longitude", "site."),
        latitude=site_entry.get("latitude"),
        timezone=timezone,
        masters_at=_local_time(reader, site_entry.get("masters_at", "09:00")),
    )
    frame_types = {str(k): str(v) for k, v in reader.require(entry, "frame_types").items()}
    unknown = sorted(set(frame_types.values()) - set(FRAME_TYPES))
    if unknown:
        raise reader.error(f"frame types {unknown} not in {FRAME_TYPES}")
    keywords = {
        str(k): str(v)
        for k, v in reader.known(reader.require(entry, "keywords"), QUANTITIES, "keywords").items()
    }
    for needed in ("frame_type", "date_obs", "exptime"):
        if needed not in keywords:
            raise reader.error(f"keywords.{needed} is required")
    if "binning" not in keywords and not {"binning_x", "binning_y"} <= set(keywords):
        raise reader.error("needs keywords.binning or binning_x/binning_y")
    overscan_entry = entry.get("overscan")
    overscan = None
    if overscan_entry:
        reader.known(overscan_entry, OVERSCAN_KEYS, "overscan")
        if overscan_entry.get("side") not in ("left", "right"):
            raise reader.error("overscan.side must be left or right")
        overscan = Overscan(
            side=overscan_entry["side"], width=int(reader.number(overscan_entry, "width", "overscan."))
        )
    return Instrument(
        name=name,
        description=str(entry.get("description", "")),
        site=site,
        match=tuple(str(m) for m in reader.require(entry, "match")),
        keywords=keywords,
        frame_types=frame_types,
        filters={str(k): str(v) for k, v in (entry.get("filters") or {}).items()},
        default_filter=entry.get("default_filter"),
        gain=reader.number(entry, "gain"),
        read_noise=reader.number(entry, "read_noise"),
        saturation=reader.number(entry, "saturation"),
        pixel_scale=entry.get("pixel_scale"),
        readout_sizes=tuple(tuple(int(v) for v in s) for s in reader.require(entry, "readout_sizes")),
        binnings=tuple(tuple(int(v) for v in b) for b in entry.get("binnings", [[1, 1]])),
        overscan=overscan,
        darks_include_bias=reader.flag(entry, "darks_include_bias", False),
        bad_regions=tuple(tuple(int(v) for v in region) for region in entry.get("bad_regions") or ()),
        windows=reader.flag(entry, "windows", False),
        science_modes=_science_modes(reader, entry.get("science_modes") or {}),
        quality=_quality(reader, entry.get("quality") or {}),
    )


def _quality(reader: _Entry, entry: Any) -> QualityLimits:
    entry = reader.known(entry, QUALITY_KEYS, "quality")
    thresholds = dict(QUALITY_DEFAULTS)
    for name, value in entry.items():
        if name == "zero_points":
            continue
        default = QUALITY_DEFAULTS[name]
        if isinstance(value, Mapping):
            reader.known(value, {"limit", "severity"}, f"quality.{name}")
            limit = reader.number(value, "limit", f"quality.{name}.") if "limit" in value else default.limit
            severity = str(value.get("severity", default.severity))
        else:
            limit, severity = reader.number(entry, name, "quality."), default.severity
        if severity not in SEVERITIES:
            raise reader.error(f"quality.{name}.severity = {severity!r}: expected warn or error")
        if not limit >= 0:
            raise reader.error(f"quality.{name} limit {limit!r} must not be negative")
        thresholds[name] = Threshold(limit, severity)
    zero_points = entry.get("zero_points") or {}
    if not isinstance(zero_points, Mapping):
        raise reader.error("quality.zero_points must map filter names to magnitudes")
    return QualityLimits(
        thresholds=thresholds,
        zero_points={str(f): reader.number(zero_points, f, "quality.zero_points.") for f in zero_points},
    )


def _science_modes(reader: _Entry, entries: Any) -> tuple[ScienceMode, ...]:
    if not isinstance(entries, Mapping):
        raise reader.error("science_modes must be a mapping of mode names to modes")
    modes = []
    for name, raw_entry in entries.items():
        where = f"science_modes.{name}"
        entry = reader.known(raw_entry or {}, MODE_KEYS, where)
        required = tuple(entry.get("required", MASTER_TYPES))
        optional = tuple(entry.get("optional", ()))
        unknown = sorted(set(required + optional) - set(MASTER_TYPES))
        if unknown or set(required) & set(optional):
            raise reader.error(
                f"{where}: required and optional must be distinct masters of {', '.join(MASTER_TYPES)} "
                f"(got {', '.join(required + optional)})"
            )
        raw_match = entry.get("match") or {}
        if not isinstance(raw_match, Mapping):
            raise reader.error(f"{where}.match must map header keywords to values")
        match = {
            str(keyword): tuple(
                str(v).strip().lower() for v in (values if isinstance(values, list) else [values])
            )
            for keyword, values in raw_match.items()
        }
        spectrum = reader.flag(entry, "spectrum", False)
        line_fwhm = reader.number(entry, "line_fwhm", f"{where}.") if "line_fwhm" in entry else None
        if spectrum and line_fwhm is None:
            raise reader.error(f"{where}: a spectrum mode needs line_fwhm (pixels, its sharpest lines)")
        modes.append(ScienceMode(str(name), match, required, optional, spectrum, line_fwhm))
    return tuple(modes)


def parse_registry(text: str, source: str = "<string>") -> Registry:
    """Parse registry YAML text into a :class:`Registry`; raises :class:`RegistryError` naming the
    file, the instrument and the key."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise RegistryError(f"{source}: not valid YAML: {err}") from err
    entries = document.get("instruments") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise RegistryError(f"{source}: no 'instruments' mapping")
    instruments = {}
    for name, entry in entries.items():
        if not str(name).replace("_", "").isalnum() or str(name) != str(name).lower():
            raise RegistryError(f"{source}: instrument name {name!r} must be lower-case alphanumeric")
        instruments[str(name)] = _parse_instrument(source, str(name), entry)
    return Registry(instruments=instruments, source=source)


def default_registry_path() -> str:
    return str(resources.files("reduction_assets.support") / "defaults" / "instruments.yaml")


@functools.cache
def load_registry(path: str | None = None) -> Registry:
    """Load the registry from ``path``, else ``$REDUCTION_INSTRUMENTS``, else the packaged file."""
    path = path or os.environ.get(REGISTRY_ENV) or default_registry_path()
    return parse_registry(Path(path).read_text(), source=path)
