"""Shared fixtures: small simulated nights, fresh homes, and the rules for optional services."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from astropy.io import fits

from reduction_assets.instruments import load_registry
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets.support.home import Home

# The real frames live beside the repository (../shared/data/real), never inside it.
REAL_DATA = Path(
    os.environ.get("REDUCTION_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real")
)
REAL_ST7 = REAL_DATA / "st7-2019-10-28"
NIGHT = dt.date(2026, 11, 20)
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, reason: str) -> None:
    """Skip when something optional is missing, but fail in CI, where it must exist."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    """The modules marked slow first, the longest first (``pytest.mark.slow(seconds=...)``: about
    how long the whole file takes), then the rest in collection order. `make test` hands whole files
    to its workers in this order (``--dist loadfile --no-loadscope-reorder``), so the files that
    wait minutes on daemons start at once and the quick ones fill in around them."""

    def order(item) -> float:
        slow = item.get_closest_marker("slow")
        return -float(slow.kwargs.get("seconds", 1)) if slow else 0.0

    items.sort(key=order)


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture(scope="session")
def lcosim_night(tmp_path_factory, registry):
    """One small lcosim night (128x128 imaging area), simulated once per test session."""
    out = tmp_path_factory.mktemp("lcosim_night")
    return simulate_night(registry["lcosim"], NIGHT, out, SimulationConfig(seed=11))


@pytest.fixture(scope="session")
def noirsim_night(tmp_path_factory, registry):
    out = tmp_path_factory.mktemp("noirsim_night")
    return simulate_night(registry["noirsim"], NIGHT, out, SimulationConfig(seed=12))


@pytest.fixture(scope="session")
def reduced_lcosim_night(tmp_path_factory, lcosim_night):
    """The lcosim night through one whole partition run (ingest, masters, reduced frames), built
    once per session; tests take a copy with ``BuiltNight.copy_into(home)``."""
    from reduction_assets_tests.runs import BuiltNight, run_partition

    home = Home(tmp_path_factory.mktemp("reduced_lcosim") / "home").ensure()
    result = run_partition(home, deliver(lcosim_night.frames, home.landing))
    return BuiltNight(home, result)


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def real_st7() -> Path:
    require(REAL_ST7.is_dir(), f"the real ST-7 frames are not at {REAL_ST7}")
    return REAL_ST7


def deliver(paths, landing: Path, names: list[str] | None = None, age_seconds: float = 3600) -> list[str]:
    """Copy frames into landing/ as a transfer would, dated ``age_seconds`` ago (settled)."""
    delivered = []
    for i, path in enumerate(paths):
        name = names[i] if names else Path(path).name
        target = landing / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        past = target.stat().st_mtime - age_seconds
        os.utime(target, (past, past))
        delivered.append(name)
    return delivered


def with_header(source: Path, target: Path, age_seconds: float = 3600, **changes) -> Path:
    """Copy of a FITS file with header cards changed (value None deletes the card)."""
    with fits.open(source) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data
        for key, value in changes.items():
            key = key.replace("_", "-") if key in ("DATE_OBS", "DAY_OBS") else key
            if value is None:
                header.remove(key, ignore_missing=True)
            else:
                header[key] = value
        target.parent.mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU(data=data, header=header).writeto(target, overwrite=True)
    past = target.stat().st_mtime - age_seconds
    os.utime(target, (past, past))
    return target


def frames_of(night, kind: str) -> list[Path]:
    return [p for p in night.frames if p.name.endswith(f"_{kind}.fits")]
