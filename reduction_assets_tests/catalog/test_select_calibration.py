"""select_calibration: the one function that picks a master for a frame."""

import datetime as dt

from reduction_assets.catalog import Calibration
from reduction_assets.catalog.calibrations import CalibrationCriteria, NoCalibration, select_calibration
from reduction_assets.instruments import CalibrationKey
from reduction_assets_tests.catalog_fixtures import catalog  # noqa: F401  (fixture)

NIGHT = dt.date(2026, 11, 20)


def add(db, night, type="flat", filter="rp", binning="1x1", bad=False, valid=(None, None), readout="128x144"):
    with db.session() as session:
        row = Calibration(
            type=type,
            instrument="lcosim",
            night=night,
            binning=binning,
            readout=readout,
            filter=filter,
            exptime=0.0,
            path=f"masters/{night}/{type}{filter}{binning}{readout}.fits",
            checksum="0",
            input_count=5,
            inputs=[],
            rejected=[],
            statistics={},
            fingerprint="f",
            software_version="0",
            bad=bad,
            valid_from=valid[0],
            valid_to=valid[1],
        )
        session.add(row)
        session.flush()
        return row.id


def select(catalog, window_nights=7, **key):  # noqa: F811
    key = CalibrationKey(**{"type": "flat", "binning": "1x1", "readout": "128x144", "filter": "rp", **key})
    with catalog.session() as session:
        found = select_calibration(session, CalibrationCriteria(key, "lcosim", NIGHT, window_nights))
        return found if isinstance(found, NoCalibration) else found.id


def test_the_same_night_is_preferred(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    add(catalog, NIGHT - dt.timedelta(days=1))
    same = add(catalog, NIGHT)
    assert select(catalog) == same


def test_the_nearest_earlier_night_is_the_fallback(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    add(catalog, NIGHT - dt.timedelta(days=5))
    nearest = add(catalog, NIGHT - dt.timedelta(days=2))
    add(catalog, NIGHT + dt.timedelta(days=1))  # later nights are not used
    assert select(catalog) == nearest


def test_a_master_marked_bad_is_never_selected(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    good = add(catalog, NIGHT - dt.timedelta(days=3))
    add(catalog, NIGHT, bad=True)
    assert select(catalog) == good


def test_filter_and_binning_must_match(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    add(catalog, NIGHT, filter="gp")
    add(catalog, NIGHT, binning="2x2")
    result = select(catalog)
    assert isinstance(result, NoCalibration)


def test_the_readout_shape_must_match_even_if_a_nearer_master_of_another_size_exists(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    same_size = add(catalog, NIGHT - dt.timedelta(days=6), readout="512x528")
    add(catalog, NIGHT, readout="128x144")
    assert select(catalog, readout="512x528") == same_size
    missing = select(catalog, readout="96x180")
    assert isinstance(missing, NoCalibration) and "flat 2026-11-20 1x1 128x144 rp" in missing.message


def test_outside_the_window_nothing_qualifies_and_the_reason_lists_the_catalog(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    add(catalog, NIGHT - dt.timedelta(days=8))
    result = select(catalog, window_nights=7)
    assert isinstance(result, NoCalibration)
    assert "nights 2026-11-13..2026-11-20" in result.message
    assert "flat 2026-11-12 1x1 128x144 rp" in result.message


def test_a_certified_validity_range_is_respected(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    older = add(catalog, NIGHT - dt.timedelta(days=4))
    yesterday = NIGHT - dt.timedelta(days=1)
    add(catalog, yesterday, valid=(yesterday, yesterday))
    assert select(catalog) == older


def test_for_archival_work_the_nearest_master_on_either_side_is_taken(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    add(catalog, NIGHT - dt.timedelta(days=3))
    after = add(catalog, NIGHT + dt.timedelta(days=2))
    key = CalibrationKey("flat", "1x1", "128x144", "rp")
    with catalog.session() as session:
        before = select_calibration(session, CalibrationCriteria(key, "lcosim", NIGHT, 7))
        either = select_calibration(session, CalibrationCriteria(key, "lcosim", NIGHT, 7, "either"))
    assert before.night == NIGHT - dt.timedelta(days=3) and either.id == after
    tie = add(catalog, NIGHT - dt.timedelta(days=2))
    with catalog.session() as session:
        assert select_calibration(session, CalibrationCriteria(key, "lcosim", NIGHT, 7, "either")).id == tie
