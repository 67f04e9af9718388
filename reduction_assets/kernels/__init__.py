"""Hot numba kernels. The public entry point is :func:`combine`."""

from reduction_assets.kernels.combine import (
    BANZAI_MAD_TO_SIGMA,
    MAD_TO_SIGMA,
    CombineResult,
    combine,
)

__all__ = ["BANZAI_MAD_TO_SIGMA", "MAD_TO_SIGMA", "CombineResult", "combine"]
