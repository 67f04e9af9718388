"""Header normalisation: a camera's own keywords turned into one typed record.

Header values are data, never code or paths. Anything from a header that ends up in a file name goes
through :func:`sanitise`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from astropy.coordinates import Angle
from astropy.io import fits

from reduction_assets.instruments import Instrument, Registry
from reduction_assets.support.secrets import DENIED_KEYWORD, looks_secret


class FrameRejected(Exception):
    """A raw file that cannot be accepted, with a machine-readable reason code."""

    def __init__(self, reason: str, message: str):
        message = shown(message)
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def shown(text: str) -> str:
    """Text safe to store, log and print: bytes of a file name that were not UTF-8 (carried as
    surrogates) become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# Reason codes recorded in the quarantine table. Stable: operators filter on them.
EMPTY_FILE = "empty_file"
NOT_FITS = "not_fits"
TRUNCATED = "truncated"
STILL_BEING_WRITTEN = "still_being_written"
VANISHED = "vanished"
MISSING_KEYWORD = "missing_keyword"
BAD_DATE = "bad_date"
BAD_VALUE = "bad_value"
UNKNOWN_INSTRUMENT = "unknown_instrument"
UNKNOWN_FRAME_TYPE = "unknown_frame_type"
SHAPE_MISMATCH = "shape_mismatch"
NAME_CONFLICT = "name_conflict"
NIGHT_OUT_OF_RANGE = "night_out_of_range"
OUTSIDE_LANDING = "outside_landing"
UNREADABLE = "unreadable"
COMPRESSED = "compressed"
BAD_HEADER = "bad_header"
VALIDATION_ERROR = "validation_error"
NOT_A_REGULAR_FILE = "not_a_regular_file"


@dataclass(frozen=True)
class FrameInfo:
    """What the catalog needs to know about one raw frame, read from its header."""

    instrument: str
    night: dt.date
    frame_type: str
    raw_frame_type: str
    date_obs: dt.datetime  # UTC, naive
    exptime: float  # seconds
    filter: str | None
    binning: tuple[int, int]  # (x, y)
    object: str | None
    ra: float | None  # degrees
    dec: float | None  # degrees
    shape: tuple[int, int] | None  # (ny, nx) of the primary data

    @property
    def binning_label(self) -> str:
        return Binning(*self.binning).label

    def as_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["night"] = self.night.isoformat()
        record["date_obs"] = self.date_obs.isoformat()
        record["binning"] = self.binning_label
        record["shape"] = list(self.shape) if self.shape else None
        return record


_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
CARD_TEXT_LENGTH = 68  # the longest string value that fits one header card


def ascii_text(value: Any) -> str:
    """Text as printable ASCII, as FITS headers and tables require: other characters become Python
    escapes (a tab ``\\t``, ``ü`` ``\\xfc``, an undecodable byte of a file name ``\\xff``)."""
    return _NOT_PRINTABLE_ASCII.sub(
        lambda m: m.group().encode("unicode_escape").decode("ascii"), shown(str(value))
    )


def card_text(value: Any, *, max_length: int = CARD_TEXT_LENGTH, keep_end: bool = True) -> str:
    """A value safe as a FITS string card: :func:`ascii_text`, at most ``max_length`` characters,
    keeping the end (the informative part of a file name) or, with ``keep_end=False``, the start."""
    text = ascii_text(value)
    if len(text) <= max_length:
        return text
    return text[-max_length:] if keep_end else text[:max_length]


def sanitise(value: Any, *, max_length: int = 64, empty: str = "unknown") -> str:
    """A header value made safe as one path component: no separators, no ``..``, no leading dot."""
    text = _SAFE.sub("_", str(value).strip())
    text = re.sub(r"\.{2,}", "_", text).strip("._-")
    return text[:max_length] or empty


def parse_date_obs(value: Any) -> dt.datetime:
    """Parse a DATE-OBS value (ISO 8601, with or without fractional seconds or a trailing Z) as UTC."""
    text = str(value).strip().rstrip("Z")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise FrameRejected(BAD_DATE, f"DATE-OBS {value!r} is not an ISO 8601 date-time") from err
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    if not (1990 <= parsed.year <= 2200):
        raise FrameRejected(BAD_DATE, f"DATE-OBS {value!r} is outside 1990-2200")
    return parsed


def parse_day_obs(value: Any) -> dt.date:
    text = str(value).strip().replace("-", "")
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError as err:
        raise FrameRejected(BAD_DATE, f"DAY-OBS {value!r} is not YYYYMMDD") from err


def _angle(value: Any, unit: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            return float(Angle(text, unit=unit).degree)
    except (ValueError, TypeError):
        return None  # pointing is informative only: a bad value must not reject the frame


@dataclass(frozen=True)
class Binning:
    """On-chip binning: pixels summed along x and y. The one reader and writer of its catalog label,
    ``2x2`` (x first)."""

    x: int
    y: int

    @classmethod
    def parse(cls, label: str) -> Binning:
        try:
            x, y = (int(value) for value in label.lower().split("x"))
        except ValueError as err:
            raise ValueError(f"{label!r} is not a binning label XxY, e.g. 2x2") from err
        return cls(x, y)

    @property
    def label(self) -> str:
        return f"{self.x}x{self.y}"


def parse_binning_label(label: str) -> tuple[int, int]:
    """(x, y) of a catalog binning label, as :attr:`FrameInfo.binning_label` writes it (``2x2``)."""
    binning = Binning.parse(label)
    return binning.x, binning.y


def binning_from_header(instrument: Instrument, header: Mapping[str, Any]) -> tuple[int, int]:
    """(x, y) binning of a frame from its header, in the camera's own convention."""
    key = instrument.keyword("binning")
    try:
        if key:
            if key not in header:
                return (1, 1)
            parts = str(header[key]).replace("x", " ").split()
            bx, by = int(parts[0]), int(parts[1])
        else:
            bx = int(header.get(instrument.keywords["binning_x"], 1))
            by = int(header.get(instrument.keywords["binning_y"], 1))
    except (ValueError, IndexError) as err:
        raise FrameRejected(BAD_VALUE, f"unreadable binning in header: {err}") from err
    if bx < 1 or by < 1:
        raise FrameRejected(BAD_VALUE, f"binning {bx}x{by} is not positive")
    return bx, by


def header_shape(header: Mapping[str, Any]) -> tuple[int, int] | None:
    if int(header.get("NAXIS", 0)) != 2:
        return None
    return int(header["NAXIS2"]), int(header["NAXIS1"])


def normalise_header(header: Mapping[str, Any], registry: Registry) -> FrameInfo:
    """Identify the camera and read the normalised quantities; raises :class:`FrameRejected`.

    Header values are data from outside: any value this code cannot interpret ends as ``bad_value``
    with the error, never as an exception that stops the caller.
    """
    try:
        return _normalise_header(header, registry)
    except FrameRejected:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError) as err:
        raise FrameRejected(
            BAD_VALUE, f"a header value cannot be interpreted: {type(err).__name__}: {err}"
        ) from err


def _normalise_header(header: Mapping[str, Any], registry: Registry) -> FrameInfo:
    instrument = registry.identify_header(header)
    if instrument is None:
        seen = {key: header.get(key) for key in ("INSTRUME", "TELESCOP", "DETECTOR") if key in header}
        raise FrameRejected(
            UNKNOWN_INSTRUMENT,
            f"no registered instrument matches {seen or 'a header without INSTRUME'}; "
            f"known: {', '.join(registry.names)}",
        )

    def required(quantity: str) -> Any:
        key = instrument.keywords[quantity]
        value = header.get(key)
        if value is None or str(value).strip() == "":
            raise FrameRejected(MISSING_KEYWORD, f"{instrument.name} frame has no {key} ({quantity})")
        return value

    raw_type = str(required("frame_type")).strip()
    frame_type = instrument.frame_type(raw_type)
    if frame_type is None:
        raise FrameRejected(
            UNKNOWN_FRAME_TYPE,
            f"{instrument.keywords['frame_type']}={raw_type!r} is not in {instrument.name}'s vocabulary "
            f"({', '.join(instrument.frame_types)})",
        )
    date_obs = parse_date_obs(required("date_obs"))
    try:
        exptime = float(required("exptime"))
    except (TypeError, ValueError) as err:
        raise FrameRejected(
            BAD_VALUE, f"exposure time {header.get(instrument.keywords['exptime'])!r} is not a number"
        ) from err
    if not math.isfinite(exptime) or exptime < 0 or exptime > 86400:
        raise FrameRejected(BAD_VALUE, f"exposure time {exptime} s is outside 0..86400 s")

    day_obs_key = instrument.keyword("day_obs")
    if day_obs_key and header.get(day_obs_key) not in (None, ""):
        night = parse_day_obs(header[day_obs_key])
    else:
        night = instrument.site.night_of(date_obs)

    filter_key = instrument.keyword("filter")
    object_key = instrument.keyword("object")
    obj = header.get(object_key) if object_key else None
    return FrameInfo(
        instrument=instrument.name,
        night=night,
        frame_type=frame_type,
        raw_frame_type=raw_type,
        date_obs=date_obs,
        exptime=exptime,
        filter=instrument.filter_name(header.get(filter_key) if filter_key else None),
        binning=binning_from_header(instrument, header),
        object=str(obj).strip() if obj not in (None, "") else None,
        ra=_angle(header.get(instrument.keyword("ra") or "", None), "hourangle"),
        dec=_angle(header.get(instrument.keyword("dec") or "", None), "deg"),
        shape=header_shape(header),
    )


REDACTED = "[redacted]"
# The card that says which cards of a header were redacted (never their values).
REDACTED_KEYWORD = "REDACTED"


def redacted_header(header: fits.Header) -> tuple[fits.Header, tuple[str, ...]]:
    """``header`` without credentials (a copy; the header itself when it holds none): a card whose
    keyword is on the deny-list is left out, a credential-like value of any other card (COMMENT and
    HISTORY too) becomes ``[redacted]``. Also the keywords concerned, in order."""
    cards = list(header.cards)
    secret = [i for i, card in enumerate(cards) if looks_secret(card.keyword, card.value)]
    if not secret:
        return header, ()
    copy = header.copy()
    for index in reversed(secret):  # by position: COMMENT and HISTORY cards repeat their keyword
        if DENIED_KEYWORD.search(cards[index].keyword):
            del copy[index]
        else:
            copy[index] = REDACTED
    return copy, tuple(dict.fromkeys(cards[i].keyword or "(blank)" for i in secret))


def header_to_json(header: fits.Header) -> dict[str, Any]:
    """The primary header as a JSON-safe dict (COMMENT/HISTORY joined, values as plain types)."""
    record: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        if not key:
            continue
        value = card.value
        if key in ("COMMENT", "HISTORY"):
            record[key] = (record.get(key, "") + "\n" + str(value)).strip()
            continue
        if isinstance(value, (bool, int, str)) or value is None:
            record[key] = value
        elif isinstance(value, float):
            record[key] = value if math.isfinite(value) else str(value)
        else:
            record[key] = str(value)
    return record
