"""Compile the numba kernels into numba's on-disk cache before the first real work.

    python -m reduction_assets.warm

numba compiles a kernel at its first call in a process and caches the machine code under
``NUMBA_CACHE_DIR`` (or beside the module); later processes load it in milliseconds. Compiling all
of them takes a minute or more (the selection networks of the L.A.Cosmic medians alone take ~20 s),
and processes that start together on a cold cache each compile the same kernels. Warming runs the
science code once on a tiny simulated night — masters, science frames, a stack — so that every
kernel is compiled for the array types the pipeline gives it, in one process, before a container
image is sealed, a deployment starts, or a test run fans out into many processes.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from reduction_assets.fits.reading import StoreFrameReader, image_shape
from reduction_assets.instruments import load_registry
from reduction_assets.kernels.select import SAMPLED_SIZE, median
from reduction_assets.reduction.masters import InputFrame, build_master
from reduction_assets.reduction.science import ScienceFrame, reduce_science_frame
from reduction_assets.reduction.stacking import (
    MemberDecision,
    MemberImage,
    MemberInfo,
    StackSettings,
    output_grid,
    stack_images,
)
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets.storage import LocalStore

WARM_NIGHT = dt.date(2026, 1, 1)


def warm(folder: Path) -> dict[str, float]:
    """Run masters, two science frames and their stack on a tiny lcosim night simulated in
    ``folder``; returns the seconds each stage took (compilation, or loading from the cache)."""
    seconds: dict[str, float] = {}
    instrument = load_registry()["lcosim"]
    config = SimulationConfig(seed=1, n_bias=3, n_dark=3, n_flat=3, filters=("rp",), n_targets=1, n_dither=2)
    night = simulate_night(instrument, WARM_NIGHT, folder, config)
    reader = StoreFrameReader(LocalStore(folder))

    def inputs(kind: str) -> list[InputFrame]:
        return [
            InputFrame(path.name, path.name, "0" * 64, f.exptime, f.date_obs, image_shape(path), (1, 1))
            for path, f in zip(night.frames, night.truth.frames)
            if f.frame_type == kind
        ]

    start = time.perf_counter()
    bias = build_master("bias", inputs("bias"), reader, instrument).master
    dark = build_master("dark", inputs("dark"), reader, instrument, bias=bias).master
    flat = build_master("flat", inputs("flat"), reader, instrument, bias=bias, dark=dark).master
    # The medians of images of 512² and more take a sampled bracket the tiny night's frames are too
    # small for.
    for dtype in (np.float32, np.float64):
        median(np.arange(SAMPLED_SIZE, dtype=dtype))
    seconds["masters"] = time.perf_counter() - start

    start = time.perf_counter()
    members: list[tuple[MemberImage, MemberInfo]] = []
    for path, frame in zip(night.frames, night.truth.frames):
        if frame.frame_type != "science":
            continue
        raw = fits.getdata(path)
        reduced = reduce_science_frame(
            ScienceFrame(
                raw=raw,
                instrument=instrument,
                geometry=instrument.geometry(raw.shape, (1, 1)),
                exptime=frame.exptime,
                masters={"bias": bias, "dark": dark, "flat": flat},
            )
        )
        calibrated = reduced.calibrated
        wcs = WCS(fits.getheader(path)).celestial  # the readout's: near enough for the grid
        members.append(
            (
                MemberImage(calibrated.sci, calibrated.err, calibrated.dq, wcs),
                MemberInfo(path.name, wcs, calibrated.sci.shape, frame.exptime, 0.0, 1.0, reduced.sources),
            )
        )
    seconds["science frames"] = time.perf_counter() - start

    start = time.perf_counter()
    settings = StackSettings()
    grid = output_grid([info for _, info in members], None, settings.max_area_factor)
    stack_images(
        [lambda image=image: image for image, _ in members],
        [MemberDecision(info.name, True, weight=1.0) for _, info in members],
        [info.exptime for _, info in members],
        [0.0 for _ in members],
        grid,
        settings,
    )
    seconds["stack"] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="reduction-warm-") as folder:
        seconds = warm(Path(folder))
    print("numba kernels compiled or loaded: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
