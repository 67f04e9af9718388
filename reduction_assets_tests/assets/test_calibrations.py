"""master_bias, master_dark, master_flat as Dagster assets: products, catalog, checks, fallbacks."""

import datetime as dt

import numpy as np
import pytest
from astropy.io import fits
from dagster import AssetKey
from sqlalchemy import select

from reduction_assets.catalog import Calibration, Catalog, Product, RawFrame
from reduction_assets.support.checksums import sha256_of
from reduction_assets.support.provenance import step_version
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of, with_header
from reduction_assets_tests.runs import metadata, run_partition


def calibrations(home):
    with Catalog(home.catalog_url()).session() as session:
        return list(session.scalars(select(Calibration).order_by(Calibration.id)))


@pytest.fixture
def night_done_copy(home, reduced_lcosim_night):
    return reduced_lcosim_night.copy_into(home)


@pytest.fixture
def built(home, reduced_lcosim_night):
    """This test's home holds the lcosim night, ingested, stacked and reduced (built once)."""
    return reduced_lcosim_night.copy_into(home)


def test_a_night_gives_a_bias_a_dark_and_a_flat_per_filter(home, built):
    rows = calibrations(home)
    assert sorted((r.type, r.filter) for r in rows) == [
        ("bias", ""),
        ("dark", ""),
        ("flat", "gp"),
        ("flat", "rp"),
    ]
    assert all(r.input_count == 5 and r.binning == "1x1" and not r.bad for r in rows)
    assert metadata(built, "master_flat")["masters"].value == 2


def test_masters_are_fits_with_sci_err_dq_and_their_inputs(home, built):
    row = next(r for r in calibrations(home) if r.type == "dark")
    path = home.products / row.path
    assert sha256_of(path) == row.checksum
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", "INPUTS"]
        header = hdul[0].header
        assert header["CALTYPE"] == "DARK" and header["NCOMBINE"] == 5 and header["BUNIT"] == "electron/s"
        bias = next(r for r in calibrations(home) if r.type == "bias")
        # The one provenance family of every product: {TAG}ID, {TAG}FILE, {TAG}AGE.
        assert (header["BIASID"], header["BIASFILE"], header["BIASAGE"]) == (
            bias.id,
            bias.path.rsplit("/", 1)[-1],
            0,
        )
        assert header["STEPVER"] == step_version("master") and header["FINGERPR"] == row.fingerprint
        names = [header[f"IMCMB{i:03d}"] for i in range(1, 6)]
        sums = [header[f"ICSUM{i:03d}"] for i in range(1, 6)]
        assert names == [entry["name"] for entry in row.inputs]
        assert sums == list(hdul["INPUTS"].data["checksum"])
        assert hdul["SCI"].data.shape == (128, 128) and hdul["DQ"].data.dtype.kind == "u"


def test_checks_pass_on_good_masters(built):
    checks = {
        c.check_name: c.passed
        for c in built.get_asset_check_evaluations()
        if c.asset_key.path[0].startswith("master_")
    }
    assert checks == {"read_noise_consistent": True, "dark_current_plausible": True, "flat_normalised": True}


def test_rematerializing_an_unchanged_night_rebuilds_nothing(home, built):
    before = {r.id: (r.checksum, r.updated_at) for r in calibrations(home)}
    again = run_partition(home)
    after = {r.id: (r.checksum, r.updated_at) for r in calibrations(home)}
    assert after == before
    assert {r.data["status"] for r in metadata(again, "master_flat")["summary"].records} == {"up_to_date"}


def test_full_refresh_rebuilds_in_place(home, built):
    before = {r.id: r.updated_at for r in calibrations(home)}
    run_partition(home, master_config={"full_refresh": True})
    after = {r.id: r.updated_at for r in calibrations(home)}
    assert set(after) == set(before) and all(after[k] > before[k] for k in before)


def test_marking_a_frame_bad_rebuilds_the_master_without_it(home, built):
    catalog = Catalog(home.catalog_url())
    with catalog.session() as session:
        frame = session.scalars(select(RawFrame).where(RawFrame.frame_type == "bias")).first()
        frame.bad, frame.bad_reason = True, "light leak"
        bad_name = frame.original_name
    run_partition(home)
    bias = next(r for r in calibrations(home) if r.type == "bias")
    assert bias.input_count == 4
    assert {"frame": bad_name, "reason": "marked bad: light leak"} in bias.rejected


def test_too_few_frames_still_materializes_and_says_why(home, lcosim_night):
    names = deliver(frames_of(lcosim_night, "bias")[:2] + frames_of(lcosim_night, "dark"), home.landing)
    result = run_partition(home, names)
    assert result.success
    assert "not enough frames: 2 usable of 2, need 3" in metadata(result, "master_bias")["status"].text
    assert "needs a master bias" in metadata(result, "master_dark")["status"].text
    assert "no flat frames" in metadata(result, "master_flat")["status"].text
    assert calibrations(home) == []


def test_a_night_without_biases_uses_the_previous_nights(home, registry, lcosim_night, tmp_path):
    from reduction_assets.simulator.night import SimulationConfig, simulate_night

    run_partition(home, deliver(frames_of(lcosim_night, "bias"), home.landing))
    next_night = NIGHT + dt.timedelta(days=1)
    later = simulate_night(
        registry["lcosim"],
        next_night,
        tmp_path / "next",
        SimulationConfig(seed=21, n_bias=0, n_flat=0, n_dither=0),
    )
    result = run_partition(home, deliver(later.frames, home.landing), night=next_night)
    dark = next(r for r in calibrations(home) if r.type == "dark")
    bias = next(r for r in calibrations(home) if r.type == "bias")
    assert dark.night == next_night and bias.night == NIGHT
    with fits.open(home.products / dark.path) as hdul:
        assert hdul[0].header["BIASID"] == bias.id and hdul[0].header["BIASAGE"] == 1
    summary = metadata(result, "master_dark")["summary"].records[0].data
    assert summary["notes"] == f"bias from {NIGHT}" and summary["partition"] == f"lcosim|{next_night}"


def noisy_biases(night, folder) -> list:
    """Copies of a night's biases with three times the instrument's read noise (a failing amplifier)."""
    rng = np.random.default_rng(0)
    noisy = []
    for path in frames_of(night, "bias"):
        with fits.open(path) as hdul:
            data = hdul[0].data.astype(np.float64)
            data += rng.normal(0, 2.8 * 7.5 / 1.6, data.shape)
            target = folder / path.name
            fits.PrimaryHDU(np.clip(data, 0, 65535).astype(np.uint16), hdul[0].header).writeto(target)
            noisy.append(target)
    return noisy


def test_a_failing_blocking_check_stops_the_masters_that_would_use_it(home, lcosim_night, tmp_path):
    names = deliver(noisy_biases(lcosim_night, tmp_path) + frames_of(lcosim_night, "dark"), home.landing)
    result = run_partition(home, names, raise_on_error=False)
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["read_noise_consistent"].passed
    assert "read noise" in checks["read_noise_consistent"].description
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert AssetKey("master_bias") in materialized  # recorded, then the check failed the step
    assert AssetKey("master_dark") not in materialized
    # The partition's own record says so, and the catalog will never offer this master again.
    bias_metadata = metadata(result, "master_bias")
    assert bias_metadata["failed_check"].value == 1
    (row,) = [r.data for r in bias_metadata["summary"].records]
    assert row["reason"].startswith("failed read_noise_consistent: read noise")
    (master,) = calibrations(home)
    assert master.bad and master.bad_reason.startswith("failed check read_noise_consistent")

    # The next night's science frames do not fall back on it (they used to, with every check green).
    science = frames_of(lcosim_night, "science")[:2]
    later = [with_header(p, tmp_path / "later" / p.name, DAY_OBS="20261121") for p in science]
    run_partition(
        home, deliver(later, home.landing), night=NIGHT + dt.timedelta(days=1), raise_on_error=False
    )
    with Catalog(home.catalog_url()).session() as session:
        products = list(session.scalars(select(Product)))
    assert len(products) == 2 and {p.status for p in products} == {"not_reducible"}
    assert all(p.bias_id is None and "BAD" in p.reason for p in products)


def test_a_master_that_fails_its_check_sends_what_was_made_with_it_back_to_be_redone(home, night_done_copy):
    from reduction_assets.catalog.integrity import record_check

    bias = next(r for r in calibrations(home) if r.type == "bias")
    with Catalog(home.catalog_url()).session() as session:
        redo = record_check(session, bias.id, "read_noise_consistent: read noise 69 e- vs 4.5 e- expected")
    assert redo == 12
    with Catalog(home.catalog_url()).session() as session:
        assert {p.fingerprint for p in session.scalars(select(Product))} == {""}
        record_check(session, bias.id, None)  # a later pass lifts the mark the check set
    assert not next(r for r in calibrations(home) if r.type == "bias").bad


def test_flats_of_a_camera_without_bias_frames_lose_their_pedestal(home, registry, tmp_path):
    from reduction_assets.simulator.night import SimulationConfig, simulate_night

    night = simulate_night(
        registry["st7"], NIGHT, tmp_path / "st7", SimulationConfig(seed=41, n_targets=1, n_dither=1)
    )
    run_partition(home, deliver(night.frames, home.landing), instrument="st7")
    flat = next(r for r in calibrations(home) if r.type == "flat")
    dark = next(r for r in calibrations(home) if r.type == "dark")
    with fits.open(home.products / flat.path) as hdul:
        master = hdul["SCI"].data
        zero_id = hdul[0].header.get("ZEROID")
    injected = night.truth.flats["clear"]
    good = np.ones(master.shape, bool)
    good[:, night.truth.bad_columns] = False
    # The master follows the injected vignetting one to one; with the ~1000 ADU pedestal left in,
    # its contrast would be diluted by ~11% (slope 0.89).
    slope = np.polyfit(injected[good], master[good], 1)[0]
    assert slope == pytest.approx(1.0, abs=0.02)
    assert np.median(master[good] / injected[good]) == pytest.approx(1.0, abs=0.003)
    assert zero_id == dark.id


def test_each_readout_shape_gets_its_own_master(home, lcosim_night, tmp_path, registry):
    from reduction_assets.simulator.night import SimulationConfig, simulate_night

    windows = simulate_night(
        registry["lcosim"],
        NIGHT,
        tmp_path / "w",
        SimulationConfig(seed=61, size=(160, 160), n_dark=0, n_flat=0, n_dither=0),
    )
    names = deliver(frames_of(lcosim_night, "bias"), home.landing) + deliver(
        windows.frames, home.landing, [f"w_{f.name}" for f in windows.frames]
    )
    run_partition(home, names)
    masters = {(r.readout, r.input_count) for r in calibrations(home) if r.type == "bias"}
    assert masters == {("128x144", 5), ("160x176", 5)}  # before: one master of the majority shape


def test_darks_of_two_exposure_times_give_a_pedestal_fit_that_calibrates_any_exposure(
    home, registry, tmp_path
):
    from reduction_assets.catalog import Product
    from reduction_assets.simulator.night import SimulationConfig, simulate_night

    st7 = registry["st7"]
    # The same detector (seed) seen with 60 s darks and with 300 s darks, flats and 100 s science.
    short = simulate_night(st7, NIGHT, tmp_path / "a", SimulationConfig(seed=43, dark_exptime=60.0, n_flat=0,
                                                                        n_dither=0))  # fmt: skip
    night = simulate_night(st7, NIGHT, tmp_path / "b", SimulationConfig(seed=43, dark_exptime=300.0,
                                                                        n_targets=1, n_dither=1,
                                                                        science_exptime=100.0))  # fmt: skip
    names = deliver(frames_of(short, "dark"), home.landing, [f"s_{f.name}" for f in frames_of(short, "dark")])
    run_partition(home, names + deliver(night.frames, home.landing), instrument="st7")
    rows = {(r.type, r.exptime): r for r in calibrations(home)}
    assert {("dark", 60.0), ("dark", 300.0), ("bias", 0.0), ("dark", 0.0), ("flat", 0.0)} <= set(rows)
    truth = night.truth
    with fits.open(home.products / rows[("dark", 0.0)].path) as hdul:
        rate = hdul["SCI"].data
    with fits.open(home.products / rows[("flat", 0.0)].path) as hdul:
        flat = hdul["SCI"].data
        assert hdul[0].header["BIASID"] == rows[("bias", 0.0)].id and "ZEROID" not in hdul[0].header
    hot = tuple(truth.hot_pixels.T)
    close = np.isclose(rate[hot], truth.dark_rate[hot], rtol=0.1, atol=0.05)
    assert np.mean(close) > 0.98 and abs(np.median(rate[hot] / truth.dark_rate[hot]) - 1) < 0.02
    # Hot pixels of the flat: right now, where a 300 s pedestal left them ~16 % low.
    ratio = flat[hot] / truth.flats["clear"][hot]
    assert abs(np.median(ratio) - 1) < 0.01
    with Catalog(home.catalog_url()).session() as session:
        (science,) = session.scalars(select(Product)).all()
    assert science.status == "reduced" and (science.bias_id, science.dark_id) == (
        rows[("bias", 0.0)].id, rows[("dark", 0.0)].id)  # fmt: skip


def test_a_master_check_whose_registry_threshold_is_a_warning_keeps_the_master(
    home, lcosim_night, tmp_path, monkeypatch, registry
):
    # The severity of a check comes from the registry's quality section: an error blocks the master
    # (above); a warning is reported and the master stays in use.
    import dataclasses

    from reduction_assets.instruments import QualityLimits, Registry, Threshold
    from reduction_assets.orchestration.resources import ReductionHomeResource

    lcosim = registry["lcosim"]
    thresholds = {**lcosim.quality.thresholds, "read_noise": Threshold(0.25, "warn")}
    lenient = dataclasses.replace(lcosim, quality=QualityLimits(thresholds, lcosim.quality.zero_points))
    patched = Registry({**registry.instruments, "lcosim": lenient}, registry.source)
    monkeypatch.setattr(ReductionHomeResource, "registry", lambda self: patched)
    names = deliver(noisy_biases(lcosim_night, tmp_path) + frames_of(lcosim_night, "dark"), home.landing)
    result = run_partition(home, names, raise_on_error=False)
    assert result.success
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "read_noise_consistent")
    assert not check.passed and check.severity.value == "WARN"
    (row,) = [r.data for r in metadata(result, "master_bias")["summary"].records]
    assert row["reason"].endswith("a warning: kept in use")
    bias = next(c for c in calibrations(home) if c.type == "bias")
    assert not bias.bad
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert AssetKey("master_dark") in materialized
