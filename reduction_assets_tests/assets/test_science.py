"""reduced_frames as a Dagster asset: products, provenance, incremental runs, fallbacks, bad input."""

import datetime as dt
import os

import pytest
from astropy.io import fits
from sqlalchemy import select

from reduction_assets.catalog import Calibration, Catalog, Product, RawFrame
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets.orchestration.sensors import evaluate_recalibration
from reduction_assets.simulator.night import SimulationConfig, simulate_night
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of, with_header
from reduction_assets_tests.runs import metadata, run_partition

NEXT = NIGHT + dt.timedelta(days=1)


def products(home, night=None):
    with Catalog(home.catalog_url()).session() as session:
        query = select(Product, RawFrame).join(RawFrame, Product.raw_frame_id == RawFrame.id)
        if night:
            query = query.where(Product.night == night)
        rows = session.execute(query.order_by(Product.id)).all()
        session.expunge_all()
        return [(p, f) for p, f in rows]


def set_bad(home, model, **where):
    with Catalog(home.catalog_url()).session() as session:
        row = session.scalars(select(model).filter_by(**where)).first()
        row.bad, row.bad_reason = True, "test: marked bad"


@pytest.fixture
def night_done(home, reduced_lcosim_night):
    """This test's home holds the lcosim night, reduced (built once)."""
    return reduced_lcosim_night.copy_into(home)


def test_every_science_frame_is_reduced_with_provenance(home, night_done):
    rows = products(home)
    assert len(rows) == 12 and {p.status for p, _ in rows} == {"reduced"}
    product, frame = rows[0]
    with fits.open(home.products / product.path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", "CAT"]
        header = hdul[0].header
        assert (header["BIASID"], header["DARKID"], header["FLATID"]) == (
            product.bias_id,
            product.dark_id,
            product.flat_id,
        )
        assert header["FLATAGE"] == 0 and header["RAWSUM"] == frame.checksum
        assert header["FINGERPR"] == product.fingerprint and header["SOFTVER"]
        assert hdul["SCI"].header["BUNIT"] == "electron" and "CTYPE1" in hdul["SCI"].header
        assert len(hdul["CAT"].data) == product.statistics["n_sources"] > 0
        assert abs(hdul["CAT"].data["ra"][0] - 11.9) < 0.1 or abs(hdul["CAT"].data["ra"][0] - 53.4) < 0.1


def test_the_instruments_bad_regions_are_flagged(home, night_done):
    product, _ = products(home)[0]
    with fits.open(home.products / product.path) as hdul:
        dq = hdul["DQ"].data
    assert (dq[:4, :4] & 64).all() and not (dq[10:20, 10:20] & 64).any()


def test_checks_pass_on_a_good_night(night_done):
    checks = {
        c.check_name: c.passed
        for c in night_done.get_asset_check_evaluations()
        if c.asset_key.path == ["reduced_frames"]
    }
    assert checks == {
        "sci_finite_where_clean": True,
        "err_positive": True,
        "sky_and_sources_plausible": True,
        "all_frames_reduced": True,
    }


def test_rematerializing_redoes_nothing_unless_asked(home, night_done):
    before = {p.id: p.updated_at for p, _ in products(home)}
    again = run_partition(home)
    assert metadata(again, "reduced_frames")["up_to_date"].value == 12
    assert {p.id: p.updated_at for p, _ in products(home)} == before


def test_full_refresh_redoes_every_frame(home, night_done):
    from dagster import AssetKey, materialize

    from reduction_assets.orchestration.assets.science import reduced_frames
    from reduction_assets.orchestration.partitions import partition_key

    result = materialize(
        [reduced_frames],
        partition_key=partition_key("lcosim", NIGHT),
        resources={"home": ReductionHomeResource(home=str(home.root))},
        run_config={"ops": {"reduced_frames": {"config": {"full_refresh": True}}}},
    )
    assert metadata(result, "reduced_frames")["reduced"].value == 12
    assert AssetKey("reduced_frames") in {e.asset_key for e in result.get_asset_materialization_events()}


def test_frames_reduced_side_by_side_are_the_bytes_reduced_one_at_a_time(home, night_done):
    from dagster import materialize

    from reduction_assets.orchestration.assets.science import reduced_frames
    from reduction_assets.orchestration.partitions import partition_key

    serial = {f.id: p.checksum for p, f in products(home)}
    result = materialize(
        [reduced_frames],
        partition_key=partition_key("lcosim", NIGHT),
        resources={"home": ReductionHomeResource(home=str(home.root))},
        run_config={"ops": {"reduced_frames": {"config": {"full_refresh": True, "frame_workers": 2}}}},
    )
    assert metadata(result, "reduced_frames")["reduced"].value == 12
    assert metadata(result, "reduced_frames")["frame_workers"].value == 2
    assert {f.id: p.checksum for p, f in products(home)} == serial
    assert metadata(night_done, "reduced_frames")["frame_workers"].value == 1  # 128x128 frames


def test_a_night_without_flats_falls_back_and_is_redone_when_its_own_arrive(
    home, registry, night_done, tmp_path
):
    later = simulate_night(
        registry["lcosim"], NEXT, tmp_path / "next", SimulationConfig(seed=31, n_flat=0, n_dither=1)
    )
    run_partition(home, deliver(later.frames, home.landing), night=NEXT)
    rows = products(home, NEXT)
    assert len(rows) == 4 and all(p.status == "reduced" and p.fallback for p, _ in rows)
    assert all(p.calibration_age == {"bias": 0, "dark": 0, "flat": 1} for p, _ in rows)
    with fits.open(home.products / rows[0][0].path) as hdul:
        assert hdul[0].header["FLATAGE"] == 1

    flats = simulate_night(
        registry["lcosim"],
        NEXT,
        tmp_path / "flats",
        SimulationConfig(seed=32, n_bias=0, n_dark=0, n_dither=0),
    )
    names = deliver(flats.frames, home.landing, [f"late_{p.name}" for p in flats.frames])
    # Only the masters first: the calibration sensor sees the nearer flats and asks for a redo.
    from dagster import AssetKey, materialize

    from reduction_assets.orchestration.assets.calibrations import master_bias, master_dark, master_flat
    from reduction_assets.orchestration.assets.raw import landing_rejects, raw_frames
    from reduction_assets.orchestration.partitions import partition_key

    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    materialize(
        [raw_frames, landing_rejects, master_bias, master_dark, master_flat],
        selection=[AssetKey(n) for n in ("raw_frames", "master_bias", "master_dark", "master_flat")],
        partition_key=partition_key("lcosim", NEXT),
        resources={"home": resource},
        run_config={"ops": {"raw_frames": {"config": {"files": names}}}},
    )
    requests = evaluate_recalibration(resource).run_requests
    assert [r.partition_key for r in requests] == [f"lcosim|{NEXT}"]
    assert requests[0].job_name == "reduce_frames"

    run_partition(home, night=NEXT)
    redone = products(home, NEXT)
    assert [p.id for p, _ in redone] == [p.id for p, _ in rows]  # updated in place
    assert all(p.calibration_age["flat"] == 0 and not p.fallback for p, _ in redone)
    assert evaluate_recalibration(resource).run_requests == []


def test_a_master_marked_bad_is_never_used(home, registry, night_done, tmp_path):
    set_bad(home, Calibration, type="flat", filter="rp")
    later = simulate_night(
        registry["lcosim"], NEXT, tmp_path / "next", SimulationConfig(seed=31, n_flat=0, n_dither=1)
    )
    run_partition(home, deliver(later.frames, home.landing), night=NEXT)
    by_filter = {f.filter: p for p, f in products(home, NEXT)}
    assert by_filter["gp"].status == "reduced"
    assert by_filter["rp"].status == "not_reducible"
    assert "no calibration matches type=flat" in by_filter["rp"].reason and "BAD" in by_filter["rp"].reason


def test_no_calibration_within_the_window_is_recorded_and_the_partition_succeeds(home, registry, tmp_path):
    alone = simulate_night(
        registry["lcosim"],
        NIGHT,
        tmp_path / "alone",
        SimulationConfig(seed=33, n_bias=0, n_dark=0, n_flat=0, n_dither=1),
    )
    result = run_partition(home, deliver(alone.frames, home.landing))
    assert result.success and metadata(result, "reduced_frames")["not_reducible"].value == 4
    product, _ = products(home)[0]
    assert product.status == "not_reducible" and product.reason.startswith("no calibration matches")


def test_a_frame_without_filter_or_exposure_time_is_not_reducible(home, lcosim_night, tmp_path):
    science = frames_of(lcosim_night, "science")
    calibrations = [p for p in lcosim_night.frames if p not in science]
    odd = [
        with_header(science[0], tmp_path / "nofilter.fits", FILTER=None),
        with_header(science[1], tmp_path / "zero.fits", EXPTIME=0.0),
    ]
    run_partition(home, deliver(calibrations + odd, home.landing))
    reasons = {f.original_name: p.reason for p, f in products(home)}
    assert reasons["nofilter.fits"] == "no filter in the header: a flat cannot be chosen"
    assert reasons["zero.fits"] == "science frame with EXPTIME 0 s"


def test_a_vanished_or_altered_raw_file_is_not_reducible(home, lcosim_night):
    run_partition(home, deliver(lcosim_night.frames, home.landing), master_config={})
    (_, frame_a), (_, frame_b) = products(home)[:2]
    os.chmod(home.raw / frame_a.store_path, 0o644)
    (home.raw / frame_a.store_path).unlink()
    os.chmod(home.raw / frame_b.store_path, 0o644)
    with open(home.raw / frame_b.store_path, "r+b") as handle:
        handle.seek(-10, 2)
        handle.write(b"corrupted!")
    from dagster import materialize

    from reduction_assets.orchestration.assets.science import reduced_frames
    from reduction_assets.orchestration.partitions import partition_key

    result = materialize(
        [reduced_frames],
        partition_key=partition_key("lcosim", NIGHT),
        resources={"home": ReductionHomeResource(home=str(home.root))},
        run_config={"ops": {"reduced_frames": {"config": {"full_refresh": True}}}},
    )
    assert result.success
    reasons = {f.original_name: p.reason for p, f in products(home)}
    assert "is missing" in reasons[frame_a.original_name]
    assert "is checksum_mismatch" in reasons[frame_b.original_name]
    assert "verify --repair" in reasons[frame_b.original_name]


def test_frames_take_masters_of_their_own_readout_from_an_earlier_night(home, registry, tmp_path):
    # Night N-6: a full set of 160x160 windows. Night N: 128x128 calibrations, 160x160 science.
    earlier = NIGHT - dt.timedelta(days=6)
    windows = simulate_night(
        registry["lcosim"], earlier, tmp_path / "w", SimulationConfig(seed=51, size=(160, 160), n_dither=0)
    )
    run_partition(home, deliver(windows.frames, home.landing), night=earlier)
    small_calibrations = simulate_night(registry["lcosim"], NIGHT, tmp_path / "s", SimulationConfig(seed=52))
    big_science = simulate_night(
        registry["lcosim"],
        NIGHT,
        tmp_path / "b",
        SimulationConfig(seed=53, size=(160, 160), n_bias=0, n_dark=0, n_flat=0, n_dither=1),
    )
    names = deliver(
        [f for f in small_calibrations.frames if "_science" not in f.name], home.landing
    ) + deliver(big_science.frames, home.landing, [f"big_{f.name}" for f in big_science.frames])
    run_partition(home, names)
    rows = products(home, NIGHT)
    assert len(rows) == 4 and {p.status for p, _ in rows} == {"reduced"}
    assert all(p.calibration_age == {"bias": 6, "dark": 6, "flat": 6} for p, _ in rows)
    with Catalog(home.catalog_url()).session() as session:
        used = {session.get(Calibration, p.flat_id).readout for p, _ in rows}
    assert used == {"160x176"}  # 160 columns and lcosim's 16 of overscan


def test_reduced_headers_describe_the_trimmed_frame_in_electrons(home, night_done):
    product, frame = products(home)[0]
    with fits.open(home.products / product.path) as hdul:
        header, sci = hdul[0].header, hdul["SCI"].data
    raw = frame.header
    assert header["GAIN"] == 1.0 and header["RAWGAIN"] == raw["GAIN"]
    assert header["RAWSATUR"] == raw["SATURATE"] and header["RAWTSEC"] == raw["TRIMSEC"]
    assert header["RAWBSEC"] == raw["BIASSEC"] and "TRIMSEC" not in header and "BIASSEC" not in header
    assert header["DATASEC"] == f"[1:{sci.shape[1]},1:{sci.shape[0]}]"
    # Saturation in electrons above the bias: (62000 - ~1000 ADU) x 1.6 e-/ADU.
    assert header["SATURATE"] == pytest.approx((62000 - 1000) * 1.6, rel=0.01)
