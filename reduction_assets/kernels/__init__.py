"""Hot numba kernels. The public entry point is :func:`combine`."""

from reduction_assets.kernels.combine import (
    BANZAI_MAD_TO_SIGMA,
    MAD_TO_SIGMA,
    CombineResult,
    NoiseModel,
    combine,
)
from reduction_assets.kernels.streaming import combine_blocks

__all__ = [
    "BANZAI_MAD_TO_SIGMA",
    "MAD_TO_SIGMA",
    "CombineResult",
    "NoiseModel",
    "combine",
    "combine_blocks",
]
