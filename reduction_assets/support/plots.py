"""Quality plots (matplotlib's Agg backend, no display): frame thumbnails with their sources,
histograms of a night's frames and metric trends across nights, as PNG bytes.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through pyplot, so that no
global state is shared between threads (a code server evaluates sensors and runs side by side).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METADATA_PNG_BYTES = 100_000  # PNGs in materialization metadata live in the event log: keep them small
FULL_DPI = 110
THUMBNAIL_PIXELS = 512  # images are block-averaged to at most this many pixels a side before drawing


@dataclass(frozen=True)
class Panel:
    """One image to show: its title, pixels and, optionally, source positions (0-based x, y)."""

    title: str
    image: np.ndarray
    x: np.ndarray | None = None
    y: np.ndarray | None = None


@dataclass(frozen=True)
class Series:
    """One line of a trend: per night the values measured that night (drawn as their median, with
    the range as an error bar)."""

    label: str
    nights: Sequence[dt.date]
    values: Sequence[Sequence[float]]


@dataclass(frozen=True)
class Limits:
    """Horizontal lines of a trend: the check's bounds (None: unbounded on that side)."""

    low: float | None = None
    high: float | None = None


def _figure(width: float, height: float) -> Figure:
    """A new figure of that size in inches. matplotlib is imported here, not with the module: it
    costs ~0.6 s, and every process that loads the definitions (run workers, step processes, the
    daemon's code servers) imports this module while few of them draw."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png(figure: Figure, dpi: float = FULL_DPI) -> bytes:
    """The figure as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    # No "Software" chunk: the same figure gives the same bytes with any matplotlib release.
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def data_url(png_bytes: bytes) -> str:
    """A PNG as a ``data:`` URL: an image inside markdown metadata or an HTML page, nothing fetched."""
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def small_png(figure: Figure, max_bytes: int = METADATA_PNG_BYTES) -> bytes:
    """The figure as a PNG of at most ``max_bytes``: the resolution goes down until it fits."""
    dpi = 60.0
    while True:
        data = png(figure, dpi)
        if len(data) <= max_bytes or dpi <= 15:
            return data
        dpi *= 0.8 * (max_bytes / len(data)) ** 0.5


def _thumbnail(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Block-average an image to at most THUMBNAIL_PIXELS a side; returns it and the block size."""
    block = max(1, int(np.ceil(max(image.shape) / THUMBNAIL_PIXELS)))
    if block == 1:
        return image, 1
    ny, nx = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    trimmed = image[:ny, :nx].astype(np.float64)
    return np.nanmean(trimmed.reshape(ny // block, block, nx // block, block), axis=(1, 3)), block


def thumbnails(panels: Sequence[Panel], title: str, columns: int = 3) -> Figure:
    """A grid of images scaled with zscale (as ds9 shows them), sources circled."""
    from astropy.visualization import ZScaleInterval  # imports matplotlib: see _figure

    rows = max(1, -(-len(panels) // columns))
    figure = _figure(4.0 * min(columns, max(len(panels), 1)), 4.0 * rows)
    figure.suptitle(title)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, min(columns, len(panels)), index + 1)
        image, block = _thumbnail(np.asarray(panel.image))
        finite = image[np.isfinite(image)]
        low, high = ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)
        axes.imshow(image, origin="lower", cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        if panel.x is not None and panel.y is not None and len(panel.x):
            axes.scatter(
                (np.asarray(panel.x) + 0.5) / block - 0.5,
                (np.asarray(panel.y) + 0.5) / block - 0.5,
                s=40,
                facecolors="none",
                edgecolors="tab:orange",
                linewidths=0.8,
            )
        axes.set_title(panel.title, fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    return figure


def histograms(samples: Mapping[str, tuple[Sequence[float], str]], title: str) -> Figure:
    """One histogram per quantity (``name: (values, unit)``) of a night's frames."""
    figure = _figure(4.0 * max(len(samples), 1), 3.2)
    figure.suptitle(title)
    for index, (name, (values, unit)) in enumerate(samples.items()):
        axes = figure.add_subplot(1, max(len(samples), 1), index + 1)
        finite = [v for v in values if v is not None and np.isfinite(v)]
        if finite:
            axes.hist(finite, bins=min(20, max(5, len(finite))), color="tab:blue", edgecolor="white")
        else:
            axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel(f"{name} [{unit}]")
        axes.set_ylabel("frames")
    figure.tight_layout()
    return figure


def trend(
    metric: str, unit: str, series: Sequence[Series], title: str, limits: Limits | None = None
) -> Figure:
    """A metric across nights: one point per night and series (the night's median, its range as
    an error bar), the check's limits as dashed lines."""
    import matplotlib.dates as mdates

    figure = _figure(8.0, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    for line in series:
        medians = np.array([np.median(v) for v in line.values], dtype=float)
        low = medians - np.array([np.min(v) for v in line.values], dtype=float)
        high = np.array([np.max(v) for v in line.values], dtype=float) - medians
        axes.errorbar(
            list(line.nights), medians, yerr=[low, high], marker="o", ms=4, capsize=2, label=line.label
        )
    if limits is not None:
        for value in (limits.low, limits.high):
            if value is not None:
                axes.axhline(value, color="tab:red", linestyle="--", linewidth=1)
    if not series:
        axes.text(0.5, 0.5, "no values in this range", ha="center", va="center", transform=axes.transAxes)
    axes.set_ylabel(f"{metric} [{unit}]")
    axes.set_title(title)
    if len(series) > 1:
        axes.legend(fontsize=7)
    nights = sorted({night for line in series for night in line.nights})
    if nights and (nights[-1] - nights[0]).days < 8:  # a few nights: a tick at each
        axes.xaxis.set_major_locator(mdates.DayLocator())
        half = dt.timedelta(hours=12)
        first, last = (dt.datetime.combine(n, dt.time()) for n in (nights[0], nights[-1]))
        axes.set_xlim(first - half, last + half)
    else:
        axes.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure
