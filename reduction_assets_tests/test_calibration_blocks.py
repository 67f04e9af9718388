"""A night's master is made once its calibration block is complete: when frames of another kind
follow it, or at the site's `masters_at` local time the morning after (then the calibration sensor
asks for the partition by itself)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from reduction_assets.catalog import Calibration, Catalog
from reduction_assets.catalog.models import Rework
from reduction_assets.catalog.operations import pending_rework
from reduction_assets.instruments import RegistryError, load_registry
from reduction_assets.tasks import schedule
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of
from reduction_assets_tests.runs import metadata, run_partition

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def test_a_block_is_open_until_something_else_follows_it_or_its_time_comes():
    block = [T0, T0 + dt.timedelta(minutes=2)]
    closes = T0 + dt.timedelta(hours=20)
    assert schedule.block_open(block, [T0 - dt.timedelta(hours=1)], closes, T0 + dt.timedelta(hours=1))
    assert not schedule.block_open(block, [T0 + dt.timedelta(minutes=5)], closes, T0 + dt.timedelta(hours=1))
    assert not schedule.block_open(block, [], closes, closes)


def test_masters_at_is_the_local_morning_after_the_night(registry):
    site = registry["lcosim"].site  # Siding Spring, local mean time from 149.07 deg E (UTC+9.94 h)
    due = site.masters_due_utc(NIGHT)
    assert due.isoformat(timespec="minutes") == "2026-11-20T23:03+00:00"


@pytest.mark.parametrize(("value", "expected"), [('"07:30"', dt.time(7, 30)), ("07:30", dt.time(7, 30))])
def test_masters_at_is_read_from_the_registry(tmp_path, value, expected):
    source = load_registry().source
    text = (
        Path(source)
        .read_text(encoding="utf-8")
        .replace(
            "site: {name: Siding Spring Observatory,",
            f"site: {{masters_at: {value}, name: Siding Spring Observatory,",
        )
    )
    path = tmp_path / "instruments.yaml"
    path.write_text(text)
    assert load_registry(path)["lcosim"].site.masters_at == expected


def test_a_malformed_masters_at_names_the_instrument(tmp_path):
    source = load_registry().source
    text = (
        Path(source)
        .read_text(encoding="utf-8")
        .replace(
            "site: {name: Siding Spring Observatory,",
            "site: {masters_at: soon, name: Siding Spring Observatory,",
        )
    )
    path = tmp_path / "instruments.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError, match=r"instrument 'lcosim': site\.masters_at = 'soon'"):
        load_registry(path)


def biases(home):
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            return session.execute(
                select(Calibration.id, Calibration.input_count).where(Calibration.type == "bias")
            ).all()
    finally:
        catalog.dispose()


def test_the_bias_waits_while_its_block_is_being_taken_then_is_made_once(home, lcosim_night, monkeypatch):
    bias = frames_of(lcosim_night, "bias")
    monkeypatch.setattr(schedule, "utc_now", lambda: dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    first = run_partition(home, deliver(bias[:3], home.landing))
    assert metadata(first, "master_bias")["waiting"].value == 1
    assert (
        "calibration block still being taken (3 frames so far"
        in metadata(first, "master_bias")["status"].value
    )
    assert biases(home) == []
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            (scheduled,) = session.scalars(select(Rework.not_before)).all()
            assert abs(scheduled - dt.datetime(2026, 11, 20, 23, 3, 44)) < dt.timedelta(seconds=1)
            assert pending_rework(session, now=dt.datetime(2026, 11, 20, 12, 0)) == []  # not yet due
            assert len(pending_rework(session, now=dt.datetime(2026, 11, 20, 23, 30))) == 1
    finally:
        catalog.dispose()
    # The rest of the night arrives: darks follow the biases, so the block is complete.
    rest = [f for f in lcosim_night.frames if f not in bias[:3]]
    second = run_partition(home, deliver(rest, home.landing))
    assert metadata(second, "master_bias")["waiting"].value == 0
    assert [count for _, count in biases(home)] == [5]


def test_at_masters_at_the_block_is_complete_whatever_follows(home, lcosim_night, monkeypatch):
    monkeypatch.setattr(schedule, "utc_now", lambda: dt.datetime(2026, 11, 20, 23, 30, tzinfo=UTC))
    result = run_partition(home, deliver(frames_of(lcosim_night, "bias"), home.landing))
    assert metadata(result, "master_bias")["waiting"].value == 0 and [c for _, c in biases(home)] == [5]
