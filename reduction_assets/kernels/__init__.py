"""Hot numba kernels: :func:`combine` (masters), :func:`resample` and :func:`coadd` (stacks)."""

from reduction_assets.kernels.coadd import Coadd, coadd
from reduction_assets.kernels.combine import (
    BANZAI_MAD_TO_SIGMA,
    MAD_TO_SIGMA,
    CombineResult,
    NoiseModel,
    combine,
)
from reduction_assets.kernels.resample import PixelMap, Resampled, pixel_map, resample
from reduction_assets.kernels.streaming import combine_blocks

__all__ = [
    "BANZAI_MAD_TO_SIGMA",
    "MAD_TO_SIGMA",
    "Coadd",
    "CombineResult",
    "NoiseModel",
    "PixelMap",
    "Resampled",
    "coadd",
    "combine",
    "combine_blocks",
    "pixel_map",
    "resample",
]
