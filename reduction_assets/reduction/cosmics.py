"""Cosmic rays: L.A.Cosmic candidates, kept only where they are sharper than the point-spread function.

L.A.Cosmic (van Dokkum 2001; reduction_assets.kernels.lacosmic, astroscrappy's algorithm in numba,
or astroscrappy itself) finds pixels whose Laplacian stands out of the
noise. On well-sampled bright stars the Laplacian's positive ring (about 2-3 px from the centre) stands
out too, and on arc spectra so do the lines. A cosmic ray, unlike a star or a line, is sharper than
the optics can make anything: so a candidate is kept only if, in at least one of the four directions
(two axes, two diagonals), its background-subtracted value exceeds what the PSF allows given its two
opposite neighbours (the SDSS photo pipeline's test, Lupton et al.)::

    (I - c sigma_I) * psf(r)  >  (I_+ + I_-) / 2 + c sigma_mean,     psf(r) = exp(-r^2 / (2 s^2))

with r = 1 (axes) or sqrt(2) (diagonals) pixels and s the PSF's sigma. Candidates next to a kept
pixel are kept with it (the wings of a hit). ``psf_fwhm`` should not exceed the sharpest real
structure of the frame: a smaller value keeps fewer candidates on stars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import astroscrappy
import numpy as np

from reduction_assets.kernels.bits import flagged_positions
from reduction_assets.kernels.fill import neighbour_means
from reduction_assets.kernels.lacosmic import LACosmicSettings, detect_cosmics
from reduction_assets.kernels.select import median

COSMIC_PAD = 6  # pixels: the Laplacian filter misses hits on the outermost rows and columns otherwise

# (dy, dx, distance) of the four directions of the sharpness test.
_DIRECTIONS = ((0, 1, 1.0), (1, 0, 1.0), (1, 1, math.sqrt(2.0)), (1, -1, math.sqrt(2.0)))


@dataclass(frozen=True)
class CosmicSettings:
    """L.A.Cosmic's parameters (astroscrappy's names) and the sharpness test's threshold."""

    sigclip: float = 4.5
    sigfrac: float = 0.3
    objlim: float = 5.0
    sharpness_sigma: float = 3.0  # c: noise margin of the sharpness test, in standard deviations
    # numba: reduction_assets.kernels.lacosmic (the same masks, faster); astroscrappy: the reference.
    backend: str = "numba"


def lacosmic_candidates(
    image: np.ndarray, variance: np.ndarray, ignore: np.ndarray, read_noise: float, settings: CosmicSettings
) -> np.ndarray:
    """L.A.Cosmic's mask of an image in electrons (variance in e^2; ``ignore`` pixels are skipped).

    The image is padded with its median first: the Laplacian filter misses hits on the outermost
    rows and columns otherwise.
    """
    pad = COSMIC_PAD
    padded = np.pad(image, pad, constant_values=median(image)).astype(np.float32, copy=False)
    padded_var = np.pad(variance, pad, constant_values=median(variance)).astype(np.float32, copy=False)
    padded_ignore = np.pad(ignore, pad, constant_values=False)
    if settings.backend == "numba":
        lacosmic = LACosmicSettings(
            sigclip=settings.sigclip, sigfrac=settings.sigfrac, objlim=settings.objlim, readnoise=read_noise
        )
        # The padded planes are this function's own: cleaned in place, not copied again.
        mask = detect_cosmics(padded, padded_ignore, padded_var, lacosmic, overwrite_input=True)
    elif settings.backend == "astroscrappy":
        mask, _ = astroscrappy.detect_cosmics(
            padded,
            inmask=padded_ignore,
            invar=padded_var,
            sigclip=settings.sigclip,
            sigfrac=settings.sigfrac,
            objlim=settings.objlim,
            gain=1.0,
            readnoise=read_noise,
            satlevel=np.inf,
            cleantype="meanmask",
            verbose=False,
        )
    else:
        raise ValueError(f"cosmic-ray backend {settings.backend!r}: expected numba or astroscrappy")
    return mask[pad:-pad, pad:-pad]


def sharper_than_psf(
    signal: np.ndarray, variance: np.ndarray, psf_fwhm: float, sharpness_sigma: float
) -> np.ndarray:
    """Pixels sharper than a Gaussian PSF of ``psf_fwhm`` pixels allows, in at least one direction.

    ``signal`` is background-subtracted (e-), ``variance`` its variance (e^2). Edge pixels, which lack
    one neighbour in every direction, are never sharp.
    """
    ys, xs = np.indices(signal.shape).reshape(2, -1)
    return _sharp_at(signal, variance, ys, xs, psf_fwhm, sharpness_sigma).reshape(signal.shape)


def _sharp_at(
    signal: np.ndarray,
    variance: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    psf_fwhm: float,
    sharpness_sigma: float,
) -> np.ndarray:
    """:func:`sharper_than_psf` at the pixels (ys, xs) only."""
    if not psf_fwhm > 0:
        raise ValueError(f"psf_fwhm must be positive, got {psf_fwhm}")
    height, width = signal.shape
    inner = (ys > 0) & (ys < height - 1) & (xs > 0) & (xs < width - 1)
    sharp = np.zeros(ys.shape, dtype=bool)
    ys, xs = ys[inner], xs[inner]
    sigma_psf = psf_fwhm / 2.3548200450309493
    lowered = signal[ys, xs] - sharpness_sigma * np.sqrt(np.maximum(variance[ys, xs], 0.0))
    found = np.zeros(ys.shape, dtype=bool)
    for dy, dx, distance in _DIRECTIONS:
        ratio = math.exp(-(distance**2) / (2.0 * sigma_psf**2))
        mean = 0.5 * (signal[ys + dy, xs + dx] + signal[ys - dy, xs - dx])
        sigma_mean = 0.5 * np.sqrt(variance[ys + dy, xs + dx] + variance[ys - dy, xs - dx])
        found |= lowered * ratio > mean + sharpness_sigma * sigma_mean
    sharp[inner] = found
    return sharp


def grow_within(seeds: np.ndarray, allowed: np.ndarray, steps: int = 0) -> np.ndarray:
    """``seeds`` grown by ``steps`` 8-connected steps through ``allowed`` pixels. One step takes the
    wings of a hit; more would walk along a star's ring of candidates from one noisy pixel."""
    grown = seeds & allowed
    for _ in range(steps):
        padded = np.pad(grown, 1)
        neighbours = np.zeros_like(grown)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbours |= padded[1 + dy : 1 + dy + grown.shape[0], 1 + dx : 1 + dx + grown.shape[1]]
        grown = neighbours & allowed
    return grown


def confirm_cosmic_rays(
    candidates: np.ndarray, signal: np.ndarray, variance: np.ndarray, psf_fwhm: float, sharpness_sigma: float
) -> np.ndarray:
    """The candidates that are sharper than the PSF (:func:`sharper_than_psf` of the
    background-subtracted ``signal``, evaluated at the candidates only), with the candidates next
    to them."""
    sharp = np.zeros(candidates.shape, dtype=bool)
    ys, xs = flagged_positions(np.ascontiguousarray(candidates, dtype=np.bool_))
    sharp[ys, xs] = _sharp_at(signal, variance, ys, xs, psf_fwhm, sharpness_sigma)
    return grow_within(sharp, candidates)


def fill_masked(
    image: np.ndarray,
    masked: np.ndarray,
    usable: np.ndarray,
    half_width: int = 2,
    *,
    overwrite_input: bool = False,
) -> np.ndarray:
    """A copy of ``image`` with ``masked`` pixels replaced by the mean of the ``usable``, unmasked
    pixels of the (2 half_width + 1)^2 box around them (widened until it holds one); for aperture
    photometry across cosmic-ray hits, instead of rescaling the aperture sum by its unmasked area.
    The copy keeps the image's dtype (the mean, taken in float64, rounded to it once). With
    ``overwrite_input`` a writable C-contiguous ``image`` is filled in place and returned."""
    masked = np.ascontiguousarray(masked, dtype=np.bool_)
    usable = np.ascontiguousarray(usable, dtype=np.bool_)
    image = np.asarray(image)
    if image.shape != masked.shape or usable.shape != masked.shape:
        raise ValueError(f"image {image.shape}, masked {masked.shape} and usable {usable.shape} differ")
    ys, xs = flagged_positions(masked)
    means, found = neighbour_means(
        np.ascontiguousarray(image), masked, usable, ys, xs, half_width, 8 * half_width
    )
    in_place = overwrite_input and image.flags.c_contiguous and image.flags.writeable
    filled = image if in_place else np.array(image, order="C")
    filled[ys[found], xs[found]] = means[found]
    return filled
