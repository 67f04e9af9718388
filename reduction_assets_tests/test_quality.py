"""Quality: the metrics of four simulated lcosim nights (two clean, one with a bias-level jump and a
hot-pixel storm, one of bad seeing) measured by quality_metrics, checked against the simulator's
truth and judged by the registry's thresholds; trends, plots, the `plot` and `report` commands."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import shutil

import numpy as np
import pytest
from dagster import AssetKey, materialize
from PIL import Image

from reduction_assets.catalog import Catalog
from reduction_assets.catalog.quality import metric_series, partition_metrics
from reduction_assets.cli import main
from reduction_assets.orchestration.partitions import partition_key
from reduction_assets.reduction.quality import QUALITY_CHECKS
from reduction_assets.simulator.night import (
    BAD_SEEING_ARCSEC,
    BIAS_JUMP_ADU,
    REFERENCE_NAME,
    SIMULATED_ZERO_POINT,
    SimulationConfig,
    simulate_night,
    with_drifts,
)
from reduction_assets.storage import LocalStore
from reduction_assets.support.home import Home
from reduction_assets.tasks.quality import TrendPoint, trend_figure
from reduction_assets_tests.conftest import deliver
from reduction_assets_tests.runs import ALL, metadata, resources, run_partition

pytestmark = pytest.mark.slow(seconds=25)

CLEAN = (dt.date(2026, 11, 10), dt.date(2026, 11, 11))
JUMP_AND_STORM = dt.date(2026, 11, 12)  # bias-level jump and hot-pixel storm
BAD_SEEING = dt.date(2026, 11, 13)
NIGHTS = (*CLEAN, JUMP_AND_STORM, BAD_SEEING)


class Measured:
    """The module's home: four nights run through the partition's assets in night order."""

    def __init__(self, home: Home, truths: dict, results: dict):
        self.home = home
        self.truths = truths
        self.results = results

    def checks(self, night: dt.date) -> dict:
        return {
            c.check_name: c
            for c in self.results[night].get_asset_check_evaluations()
            if c.asset_key == AssetKey("quality_metrics")
        }

    def rows(self, night: dt.date, metric: str) -> list:
        catalog = Catalog(self.home.catalog_url())
        try:
            with catalog.session() as session:
                return [r for r in partition_metrics(session, "lcosim", night) if r.metric == metric]
        finally:
            catalog.dispose()


@pytest.fixture(scope="module")
def measured(tmp_path_factory, registry) -> Measured:
    root = tmp_path_factory.mktemp("quality")
    home = Home(root / "home").ensure()
    lcosim = registry["lcosim"]
    truths, results = {}, {}
    for index, night in enumerate(NIGHTS):
        config = SimulationConfig(seed=40 + index, n_targets=1)
        if night == JUMP_AND_STORM:
            config = with_drifts(config, lcosim, ("bias-jump", "hot-pixel-storm"))
        if night == BAD_SEEING:
            # Stars of 10 pixels need room: a 512 x 512 window.
            config = with_drifts(SimulationConfig(seed=40 + index, n_targets=1, size=(512, 512)), lcosim,
                                 ("bad-seeing",))  # fmt: skip
        simulated = simulate_night(lcosim, night, root / night.isoformat(), config)
        truths[night] = simulated.truth
        if index > 0:  # the first night has no reference catalogue: its zero points are missing
            shutil.copyfile(simulated.truth_path.with_name(REFERENCE_NAME), home.reference / f"{night}.csv")
        names = deliver(simulated.frames, home.landing, [f"{night}/{p.name}" for p in simulated.frames])
        results[night] = run_partition(home, names, night=night)
    return Measured(home, truths, results)


# --- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("night", CLEAN)
def test_a_clean_night_raises_no_quality_check(measured, night):
    checks = measured.checks(night)
    assert set(checks) == set(QUALITY_CHECKS)
    assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}


def failing(measured, night) -> set[str]:
    return {name for name, check in measured.checks(night).items() if not check.passed}


def test_a_bias_level_jump_fails_bias_level_stable_by_the_injected_amount(measured):
    check = measured.checks(JUMP_AND_STORM)["bias_level_stable"]
    assert not check.passed and check.severity.value == "WARN"
    jump = float(re.search(r"([+-][0-9.]+) ADU from", check.description).group(1))
    assert jump == pytest.approx(BIAS_JUMP_ADU, abs=2.0)


def test_a_hot_pixel_storm_fails_hot_pixels_normal_with_the_injected_fraction(measured):
    check = measured.checks(JUMP_AND_STORM)["hot_pixels_normal"]
    assert not check.passed
    truth = measured.truths[JUMP_AND_STORM]
    injected = len(truth.hot_pixels) / truth.dark_rate.size  # 2 % of the pixels
    (row,) = measured.rows(JUMP_AND_STORM, "hot_pixel_fraction")
    assert row.value == pytest.approx(injected, rel=0.15)


def test_the_drift_night_raises_only_the_checks_of_its_drifts(measured):
    assert failing(measured, JUMP_AND_STORM) == {"bias_level_stable", "hot_pixels_normal"}


def test_a_night_of_bad_seeing_fails_seeing_within_limit_and_nothing_else(measured):
    assert failing(measured, BAD_SEEING) == {"seeing_within_limit"}
    values = [r.value for r in measured.rows(BAD_SEEING, "fwhm_arcsec") if r.value is not None]
    assert len(values) >= 3
    assert np.median(values) == pytest.approx(BAD_SEEING_ARCSEC, rel=0.12)


# --- metrics against the truth ----------------------------------------------------------------------


def values(measured, night, metric) -> list[float]:
    return [r.value for r in measured.rows(night, metric) if r.value is not None]


def test_raw_bias_levels_are_the_simulated_ones(measured):
    for night in (CLEAN[0], JUMP_AND_STORM):
        truth = measured.truths[night]
        injected = sorted(truth.bias_level + f.bias_offset for f in truth.frames if f.frame_type == "bias")
        assert sorted(values(measured, night, "bias_level")) == pytest.approx(injected, abs=0.3)


def test_read_noise_from_bias_pairs_is_the_instruments(measured):
    for night in NIGHTS:
        pairs = values(measured, night, "read_noise")
        assert len(pairs) == 4  # five bias frames
        assert np.median(pairs) == pytest.approx(7.5, rel=0.04)


def test_sky_fwhm_and_zero_point_are_the_simulated_ones(measured):
    night = CLEAN[1]
    assert np.median(values(measured, night, "sky")) == pytest.approx(20.0, rel=0.02)  # e-/s/pixel
    assert np.median(values(measured, night, "fwhm")) == pytest.approx(3.0, rel=0.08)  # pixels
    assert np.median(values(measured, night, "fwhm_arcsec")) == pytest.approx(3.0 * 0.389, rel=0.08)
    assert np.median(values(measured, night, "ellipticity")) < 0.05  # round stars
    zero_points = values(measured, night, "zero_point")
    assert len(zero_points) >= 4
    assert np.median(zero_points) == pytest.approx(SIMULATED_ZERO_POINT, abs=0.03)


def test_dark_current_and_flat_shape_are_the_simulated_ones(measured):
    night = CLEAN[0]
    (rate,) = values(measured, night, "dark_current")
    assert rate == pytest.approx(0.01, abs=0.01)  # e-/s; 5 x 300 s darks
    (hot,) = values(measured, night, "hot_pixel_fraction")
    assert hot == pytest.approx(1e-3, rel=0.3)
    corners = values(measured, night, "flat_corner_ratio")
    assert len(corners) == 2 and all(0.8 < c < 0.95 for c in corners)  # 15 % vignetting at the corners


def test_a_metric_that_cannot_be_measured_is_missing_with_its_reason_not_zero(measured):
    rows = measured.rows(CLEAN[0], "zero_point")  # no reference catalogue yet on the first night
    assert rows and all(r.value is None and r.reason == "no reference catalogue" for r in rows)
    assert all(r.value is not None for r in measured.rows(CLEAN[1], "zero_point")[:1])


# --- time series, plots, metadata ---------------------------------------------------------------------


def test_the_time_series_answers_a_range_query_in_time_order(measured):
    catalog = Catalog(measured.home.catalog_url())
    try:
        with catalog.session() as session:
            rows = metric_series(session, "bias_level", CLEAN[1], JUMP_AND_STORM, ["lcosim"])
    finally:
        catalog.dispose()
    assert {r.night for r in rows} == {CLEAN[1], JUMP_AND_STORM} and len(rows) == 10
    assert [r.time for r in rows] == sorted(r.time for r in rows)


def test_a_trend_has_one_point_per_night(measured, registry):
    catalog = Catalog(measured.home.catalog_url())
    try:
        with catalog.session() as session:
            rows = [TrendPoint.of(r) for r in metric_series(session, "bias_level", NIGHTS[0], NIGHTS[-1])]
    finally:
        catalog.dispose()
    figure = trend_figure(registry["lcosim"], "bias_level", rows, NIGHTS[0], NIGHTS[-1])
    (line,) = figure.axes[0].lines[:1]
    assert len(line.get_xdata()) == len(NIGHTS)
    medians = line.get_ydata()
    assert medians[2] - medians[1] == pytest.approx(BIAS_JUMP_ADU, abs=3.0)


def test_quality_trends_draws_every_measured_metric_into_the_product_store(measured):
    result = materialize(ALL, selection=["quality_trends"], partition_key="lcosim",
                         resources=resources(measured.home))  # fmt: skip
    table = metadata(result, "quality_trends")["trends"].records
    by_metric = {r.data["metric"]: r.data for r in table}
    assert by_metric["bias_level"]["nights"] == len(NIGHTS)
    assert by_metric["bias_level"]["latest"] == NIGHTS[-1].isoformat()
    with Image.open(measured.home.products / by_metric["sky"]["path"]) as image:
        assert image.format == "PNG" and image.size[0] >= 600


def test_metadata_images_are_valid_pngs_under_100_kb(measured):
    markdown = metadata(measured.results[CLEAN[0]], "quality_metrics")["plots"].value
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown)
    assert len(images) == 2  # the frames and the histograms
    for encoded in images:
        data = base64.b64decode(encoded)
        assert len(data) < 100_000
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            assert image.format == "PNG"
    products = LocalStore(measured.home.products)
    assert products.exists(f"quality/lcosim/{CLEAN[0]}/lcosim_{CLEAN[0]:%Y%m%d}_frames.png")


def test_quality_metrics_of_a_night_without_frames_records_nothing_and_says_so(measured, tmp_path):
    home = Home(tmp_path / "home").ensure()
    empty_night = partition_key("lcosim", "2026-10-01")
    result = materialize(
        ALL, selection=["quality_metrics"], partition_key=empty_night, resources=resources(home)
    )
    meta = metadata(result, "quality_metrics")
    assert meta["measurements"].value == 0
    assert "no frames measured" in meta["plots"].value
    assert all(c.passed for c in result.get_asset_check_evaluations())


# --- commands ---------------------------------------------------------------------------------------


def test_plot_writes_a_png_of_a_metric_across_nights(measured, tmp_path, capsys):
    out = tmp_path / "fwhm.png"
    args = ["--home", str(measured.home.root), "plot", "fwhm_arcsec", str(NIGHTS[0]), str(NIGHTS[-1])]
    assert main([*args, "--instrument", "lcosim", "--out", str(out)]) == 0
    assert f"on {len(NIGHTS)} nights" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_plot_refuses_an_unknown_metric_and_an_empty_range(measured, tmp_path, capsys):
    home = ["--home", str(measured.home.root)]
    assert main([*home, "plot", "seeing", "2026-11-01", "2026-11-30", "--out", str(tmp_path / "a.png")]) == 2
    assert "unknown metric 'seeing'; known: bias_level" in capsys.readouterr().err
    assert main([*home, "plot", "sky", "2025-01-01", "2025-01-31", "--out", str(tmp_path / "b.png")]) == 1
    assert "no values of sky from 2025-01-01 to 2025-01-31" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_report_lists_the_night_its_checks_and_inline_plots(measured, tmp_path):
    out = tmp_path / "report.html"
    assert main(["--home", str(measured.home.root), "report", str(JUMP_AND_STORM), "--out", str(out)]) == 0
    html = out.read_text()
    assert "bias_level_stable" in html and "FAILED" in html
    assert html.count("data:image/png;base64,") >= 4  # night plots and trends, inline
    assert 'src="http' not in html and 'href="http' not in html  # self-contained


def test_report_of_a_night_without_frames_says_so(measured, tmp_path, capsys):
    out = tmp_path / "empty.html"
    assert main(["--home", str(measured.home.root), "report", "2026-10-01", "--out", str(out)]) == 0
    assert "no frames for night 2026-10-01" in capsys.readouterr().out
    assert "No frames arrived for night 2026-10-01" in out.read_text()


def test_a_damaged_product_is_not_measured_and_says_why(measured, tmp_path):
    home = Home(tmp_path / "home")
    shutil.copytree(measured.home.root, home.root, symlinks=True)
    victim = next(r for r in measured.rows(CLEAN[1], "sky") if r.value is not None).subject
    path = home.products / victim
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-2880])  # truncated by a failing disk
    result = materialize(ALL, selection=["quality_metrics"], partition_key=partition_key("lcosim", CLEAN[1]),
                         resources=resources(home))  # fmt: skip
    assert result.success
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            rows = [r for r in partition_metrics(session, "lcosim", CLEAN[1]) if r.subject == victim]
    finally:
        catalog.dispose()
    assert rows and all(r.value is None for r in rows)
    assert {r.reason for r in rows} == {
        "the stored file is checksum_mismatch (`reduction-assets verify` repairs it)"
    }
