"""Resampling and co-adding 2048² frames: this project's numba kernels against reproject.

One run prints seconds and ratios (all measured in this run, on this machine) for resampling one
2048² frame onto a rotated, shifted grid with ``reduction_assets.kernels.resample`` (Lanczos-3 and
bilinear), ``reproject.reproject_interp`` (bilinear) and ``reproject.reproject_adaptive``, and for a
10-frame 2048² co-add end to end (members read from FITS files, matched, resampled, co-added, sources
extracted on the stack), with the co-add's peak memory (RSS of a fresh process).

    python -m benchmarks.coadd [--size 2048] [--frames 10] [--skip-adaptive]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

SCALE_ARCSEC = 0.389


def tan(ra: float, dec: float, crpix: tuple[float, float], rotation_deg: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix)
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    scale = SCALE_ARCSEC / 3600
    wcs.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    return wcs


def sky_image(size: int, wcs: WCS, stars: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sky (1200 e-) and Gaussian stars (FWHM 3 px) at the stars' sky positions, with noise."""
    image = np.full((size, size), 1200.0, dtype=np.float32)
    x, y = wcs.all_world2pix(stars[:, 0], stars[:, 1], 0)
    sigma = 3.0 / 2.3548
    half = 8
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    for xs, ys, flux in zip(x, y, stars[:, 2]):
        ix, iy = int(round(xs)), int(round(ys))
        if not (half <= ix < size - half and half <= iy < size - half):
            continue
        stamp = np.exp(-((xx + ix - xs) ** 2 + (yy + iy - ys) ** 2) / (2 * sigma**2))
        image[iy - half : iy + half + 1, ix - half : ix + half + 1] += flux * stamp / stamp.sum()
    return rng.poisson(image).astype(np.float32) + rng.normal(0, 7, image.shape).astype(np.float32)


def make_members(folder: Path, size: int, n: int, seed: int = 1) -> list[Path]:
    from reduction_assets.reduction.sources import extract_sources
    from reduction_assets.reduction.wcs import sky_positions

    rng = np.random.default_rng(seed)
    n_stars = size * size // 2000
    span = size * SCALE_ARCSEC / 3600
    stars = np.column_stack(
        [150.0 + rng.uniform(-0.6, 0.6, n_stars) * span / np.cos(np.radians(2.0)),
         2.0 + rng.uniform(-0.6, 0.6, n_stars) * span,
         np.exp(rng.uniform(np.log(3e3), np.log(3e6), n_stars))]
    )  # fmt: skip
    paths = []
    for k in range(n):
        offset = rng.normal(0, 10, 2)
        wcs = tan(150.0, 2.0, (size / 2 + offset[0], size / 2 + offset[1]), rotation_deg=rng.normal(0, 0.05))
        sci = sky_image(size, wcs, stars, rng)
        err = np.sqrt(np.clip(sci, 0, None) + 49).astype(np.float32)
        dq = np.zeros(sci.shape, np.uint16)
        cat, stats = extract_sources(sci, err, dq)
        header = wcs.to_header()
        cat["ra"], cat["dec"] = sky_positions(header, cat["x"], cat["y"])
        hdul = fits.HDUList(
            [fits.PrimaryHDU(), fits.ImageHDU(sci, header, name="SCI"), fits.ImageHDU(err, name="ERR"),
             fits.ImageHDU(dq, name="DQ"), fits.BinTableHDU(cat, name="CAT")]
        )  # fmt: skip
        hdul[0].header["SKY"], hdul[0].header["SKYRMS"] = stats["sky_e"], stats["sky_rms_e"]
        path = folder / f"member{k:02d}.fits"
        hdul.writeto(path)
        paths.append(path)
    return paths


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def coadd_files(paths: list[Path], queue) -> None:
    """The co-add end to end (run in a fresh process: its peak RSS is the co-add's)."""
    from reduction_assets.reduction.sources import extract_sources
    from reduction_assets.reduction.stacking import (
        MemberImage,
        MemberInfo,
        StackSettings,
        assess_members,
        output_grid,
        stack_images,
    )

    # compile (or load from cache) the kernels before timing, as a long-running code server would
    warm = np.ones((1, 8, 8), np.float32)
    from reduction_assets.kernels import coadd, pixel_map, resample

    resample(warm[0], pixel_map(tan(0, 0, (4, 4)), tan(0, 0, (4, 4)), (8, 8)))
    coadd(warm, warm, np.zeros((1, 8, 8), np.uint16), weights=[1.0], scales=[1.0], offsets=[0.0],
          exptimes=[1.0], reject_bits=1)  # fmt: skip
    baseline = peak_rss_mib()
    started = time.perf_counter()
    infos = []
    for path in paths:
        with fits.open(path) as hdul:
            infos.append(
                MemberInfo(str(path), WCS(hdul["SCI"].header), hdul["SCI"].data.shape, 60.0,
                           hdul[0].header["SKY"], hdul[0].header["SKYRMS"], np.array(hdul["CAT"].data))
            )  # fmt: skip

    def load(path):
        with fits.open(path) as hdul:
            return MemberImage(
                hdul["SCI"].data.astype(np.float32), hdul["ERR"].data.astype(np.float32),
                hdul["DQ"].data.astype(np.uint16), WCS(hdul["SCI"].header),
            )  # fmt: skip

    settings = StackSettings()
    grid = output_grid(infos, SCALE_ARCSEC, settings.max_area_factor)
    decisions = assess_members(infos, grid, settings)
    from reduction_assets.support.scratch import scratch_planes

    with scratch_planes() as planes:
        loads = [lambda p=p: load(p) for p in paths]
        skies = [info.sky for info in infos]
        image = stack_images(loads, decisions, [60.0] * len(paths), skies, grid, settings, planes=planes)
    extract_sources(image.sci, image.err, image.dq)
    elapsed = time.perf_counter() - started
    peak = peak_rss_mib()
    queue.put((elapsed, sum(d.included for d in decisions), grid.shape, baseline, peak))


def timed(function, repeat: int = 1) -> tuple[float, object]:
    """The best of ``repeat`` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--skip-adaptive", action="store_true", help="reproject_adaptive takes minutes")
    args = parser.parse_args()
    from reproject import reproject_adaptive, reproject_interp

    from reduction_assets.kernels import pixel_map, resample

    size = args.size
    rng = np.random.default_rng(0)
    source = tan(150.0, 2.0, (size / 2, size / 2))
    target = tan(150.0005, 2.0003, (size / 2 + 3.3, size / 2 - 7.6), rotation_deg=0.7)
    image = rng.normal(1000, 30, (size, size)).astype(np.float32)
    variance = np.full(image.shape, 900, np.float32)
    dq = np.zeros(image.shape, np.uint16)
    resample(image[:64, :64], pixel_map(source, target, (64, 64)))  # compile / load the cache
    rows = []
    seconds, mapping = timed(lambda: pixel_map(source, target, (size, size)), 5)
    rows.append(("control-grid mapping (astropy at control points)", seconds, None))
    for kernel in ("lanczos3", "bilinear"):
        seconds, _ = timed(lambda k=kernel: resample(image, mapping, kernel=k), 5)
        rows.append((f"ours {kernel}, SCI", seconds, None))
        seconds, _ = timed(lambda k=kernel: resample(image, mapping, variance=variance, dq=dq, kernel=k), 5)
        rows.append((f"ours {kernel}, SCI + variance + DQ", seconds, None))
        seconds, _ = timed(
            lambda k=kernel: resample(image, pixel_map(source, target, (size, size)), kernel=k), 3
        )
        rows.append((f"ours {kernel} incl. mapping", seconds, None))
    seconds, _ = timed(
        lambda: reproject_interp((image, source), target, shape_out=(size, size), order="bilinear")
    )
    rows.append(("reproject_interp (bilinear)", seconds, None))
    if not args.skip_adaptive:
        seconds, _ = timed(lambda: reproject_adaptive((image, source), target, shape_out=(size, size)))
        rows.append(("reproject_adaptive", seconds, None))
    reference = next(s for name, s, _ in rows if name == "ours lanczos3 incl. mapping")  # what reproject does
    interp = next(s for name, s, _ in rows if name.startswith("reproject_interp"))
    print(f"\nresampling one {size}² frame")
    print(f"{'':52s}{'seconds':>10s}{'x ours L3':>12s}{'interp / it':>13s}")
    for name, seconds, _ in rows:
        print(f"{name:52s}{seconds:10.3f}{seconds / reference:12.2f}{interp / seconds:13.1f}")

    with tempfile.TemporaryDirectory(prefix="coadd_bench_") as folder:
        print(f"\nwriting {args.frames} members of {size}² ...", flush=True)
        paths = make_members(Path(folder), size, args.frames)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        worker = context.Process(target=coadd_files, args=(paths, queue))
        worker.start()
        elapsed, used, shape, baseline, peak = queue.get()
        worker.join()
    print(f"\n{args.frames}-frame {size}² co-add end to end (read, match, resample, co-add, sources)")
    print(f"{'members used':30s}{used:>10d}")
    print(f"{'stack shape':30s}{shape[0]:>5d}x{shape[1]:<5d}")
    print(f"{'seconds':30s}{elapsed:10.2f}")
    print(f"{'peak RSS MiB (whole process)':30s}{peak:10.0f}")
    print(f"{'  of which before the co-add':30s}{baseline:10.0f}  (Python, numpy, astropy, numba, sep)")


if __name__ == "__main__":
    main()
