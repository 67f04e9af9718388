"""Warming the numba cache: every kernel is compiled by the warm-up night."""

import importlib
import pkgutil

from numba.core.registry import CPUDispatcher

import reduction_assets.kernels
from reduction_assets.warm import warm

# Kernels the warm-up need not reach: compiled with their caller (a caller loaded from the cache
# leaves them uncompiled in this process), or not on the pipeline's path.
NOT_CALLED_FROM_PYTHON = {
    "reduction_assets.kernels._combine_kernel._mad": "inside combine_kernel",
    "reduction_assets.kernels.apertures._annuli": "inside _flux_radii",
    "reduction_assets.kernels.apertures._sum_circle": "inside _sum_circles",
    "reduction_assets.kernels.apertures._windowed": "inside _windowed_all",
    "reduction_assets.kernels.apertures.circle_overlap": "inside _sum_circle and _windowed",
    "reduction_assets.kernels.apertures._overlap_core": "inside circle_overlap",
    "reduction_assets.kernels.lacosmic._dilate5": "saturation growth: the pipeline flags saturation",
}


def kernels() -> dict[str, CPUDispatcher]:
    """Every numba-compiled function of reduction_assets.kernels, except those inlined into others."""
    found = {}
    for module_info in pkgutil.iter_modules(reduction_assets.kernels.__path__):
        module = importlib.import_module(f"reduction_assets.kernels.{module_info.name}")
        for name, value in vars(module).items():
            if (
                isinstance(value, CPUDispatcher)
                and value.__module__ == module.__name__
                and value.targetoptions.get("inline", "never") != "always"
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_the_warm_up_night_compiles_every_kernel(tmp_path):
    seconds = warm(tmp_path)
    assert set(seconds) == {"masters", "science frames", "stack"}
    not_compiled = sorted(name for name, kernel in kernels().items() if not kernel.signatures)
    assert sorted(set(not_compiled) - set(NOT_CALLED_FROM_PYTHON)) == []
    assert len(kernels()) - len(NOT_CALLED_FROM_PYTHON) >= 14
