"""The landing sensor: cursor, settling, routing to partitions, run keys."""

import json
import os
import time

import pytest
from dagster import build_sensor_context

from reduction_assets.fits.validate import FileState
from reduction_assets.landing import Route, scan_landing
from reduction_assets.resources import ReductionHomeResource
from reduction_assets.sensors import landing_sensor, plan_landing_tick
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of

NOW = 1_800_000_000.0


def state(size=100, age=60.0):
    return FileState(size, int((NOW - age) * 1e9))


def route_all_to(instrument="lcosim"):
    return lambda name: Route(instrument, NIGHT)


def test_new_settled_files_are_requested_once():
    files = {"a.fits": state(), "b.fits": state()}
    first = plan_landing_tick(files, None, settle_seconds=5, route=route_all_to(), now=NOW)
    assert first.by_partition == {("lcosim", "2026-11-20"): ["a.fits", "b.fits"]}
    second = plan_landing_tick(files, first.cursor, settle_seconds=5, route=route_all_to(), now=NOW)
    assert second.by_partition == {} and second.already == 2


def test_re_evaluating_from_an_old_cursor_loses_nothing():
    first = plan_landing_tick({"a.fits": state()}, None, settle_seconds=5, route=route_all_to(), now=NOW)
    files = {"a.fits": state(), "b.fits": state()}
    # The daemon may evaluate again from the same cursor (a tick whose cursor was not saved).
    for _ in range(2):
        again = plan_landing_tick(files, first.cursor, settle_seconds=5, route=route_all_to(), now=NOW)
        assert again.by_partition == {("lcosim", "2026-11-20"): ["b.fits"]}


def test_files_still_changing_wait_until_they_settle():
    growing = {"a.fits": state(size=100, age=1.0)}
    tick = plan_landing_tick(growing, None, settle_seconds=5, route=route_all_to(), now=NOW)
    assert tick.by_partition == {} and tick.waiting == ["a.fits"]
    settled = {"a.fits": state(size=5000, age=6.0)}
    later = plan_landing_tick(settled, tick.cursor, settle_seconds=5, route=route_all_to(), now=NOW)
    assert later.by_partition == {("lcosim", "2026-11-20"): ["a.fits"]}


def test_a_file_replaced_with_new_content_is_requested_again():
    first = plan_landing_tick({"a.fits": state(100)}, None, settle_seconds=0, route=route_all_to(), now=NOW)
    changed = {"a.fits": FileState(200, int((NOW - 30) * 1e9))}
    again = plan_landing_tick(changed, first.cursor, settle_seconds=0, route=route_all_to(), now=NOW)
    assert again.by_partition == {("lcosim", "2026-11-20"): ["a.fits"]}


def test_files_gone_from_landing_leave_the_cursor():
    first = plan_landing_tick(
        {"a.fits": state(), "b.fits": state()}, None, settle_seconds=0, route=route_all_to(), now=NOW
    )
    later = plan_landing_tick(
        {"b.fits": state()}, first.cursor, settle_seconds=0, route=route_all_to(), now=NOW
    )
    assert list(json.loads(later.cursor)["requested"]) == ["b.fits"]


def test_unroutable_files_go_to_landing_rejects():
    from reduction_assets.fits.headers import FrameRejected

    def route(name):
        if name == "bad.fits":
            raise FrameRejected("not_fits", "no")
        return Route("st7", NIGHT)

    tick = plan_landing_tick(
        {"bad.fits": state(), "ok.fits": state()}, None, settle_seconds=0, route=route, now=NOW
    )
    assert tick.rejects == ["bad.fits"]
    assert tick.by_partition == {("st7", "2026-11-20"): ["ok.fits"]}


def test_hidden_and_temporary_names_are_not_arrivals(tmp_path):
    for name in ("frame.fits", ".frame.fits.x7Yz", "frame2.fits.part", "frame3.fits.tmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "frame4.fits").write_bytes(b"x")
    (tmp_path / "night1").mkdir()
    (tmp_path / "night1" / "frame5.fits").write_bytes(b"x")
    scan = scan_landing(tmp_path)
    assert sorted(scan.files) == ["frame.fits", "night1/frame5.fits"]
    # ... but none is skipped silently: each is listed with its reason.
    assert sorted((e.name, e.reason) for e in scan.ignored) == [
        (".frame.fits.x7Yz", "hidden"),
        (".hidden", "hidden"),
        ("frame2.fits.part", "temporary_name"),
        ("frame3.fits.tmp", "temporary_name"),
    ]


def test_sensor_requests_one_run_per_partition_with_content_run_keys(home, lcosim_night, noirsim_night):
    deliver(frames_of(lcosim_night, "bias") + frames_of(noirsim_night, "bias"), home.landing)
    (home.landing / "junk.fits").write_text("x")
    os.utime(home.landing / "junk.fits", (time.time() - 60,) * 2)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=5)
    result = landing_sensor(build_sensor_context(cursor=None), home=resource)
    requests = {r.partition_key or "rejects": r for r in result.run_requests}
    assert set(requests) == {"lcosim|2026-11-20", "noirsim|2026-11-20", "rejects"}
    lco = requests["lcosim|2026-11-20"]
    assert len(lco.run_config["ops"]["raw_frames"]["config"]["files"]) == 5
    assert requests["rejects"].run_config["ops"]["landing_rejects"]["config"]["files"] == ["junk.fits"]

    idle = landing_sensor(build_sensor_context(cursor=result.cursor), home=resource)
    assert not idle.run_requests
    assert (
        "no new files" in idle.skip_reason.skip_message
        and "11 already requested" in idle.skip_reason.skip_message
    )


def test_idle_tick_says_which_files_are_waiting(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, age_seconds=0)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=600)
    result = landing_sensor(build_sensor_context(cursor=None), home=resource)
    assert not result.run_requests
    assert "1 waiting to settle" in result.skip_reason.skip_message


def test_a_night_whose_partition_does_not_exist_yet_is_asked_for_again_later():
    import datetime as dt

    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    tick = plan_landing_tick(
        {"early.fits": state()}, None, settle_seconds=0, route=lambda name: Route("lcosim", tomorrow), now=NOW
    )
    assert tick.by_partition == {} and tick.rejects == [] and tick.waiting == []
    assert tick.not_open == {"early.fits": tomorrow.isoformat()}
    assert json.loads(tick.cursor)["requested"] == {}


def test_a_night_before_the_first_partition_is_rejected():
    import datetime as dt

    tick = plan_landing_tick(
        {"old.fits": state()},
        None,
        settle_seconds=0,
        route=lambda name: Route("lcosim", dt.date(2001, 1, 1)),
        now=NOW,
    )
    assert tick.rejects == ["old.fits"]


def test_files_of_a_partition_with_a_run_in_flight_wait_for_it():
    files = {"a.fits": state(), "b.fits": state()}
    tick = plan_landing_tick(
        files, None, settle_seconds=0, route=route_all_to(), now=NOW, busy={"lcosim|2026-11-20"}
    )
    assert tick.by_partition == {} and tick.deferred == {
        "a.fits": "lcosim|2026-11-20",
        "b.fits": "lcosim|2026-11-20",
    }
    assert json.loads(tick.cursor)["requested"] == {}  # asked for again once the run is over
    later = plan_landing_tick(files, tick.cursor, settle_seconds=0, route=route_all_to(), now=NOW)
    assert later.by_partition == {("lcosim", "2026-11-20"): ["a.fits", "b.fits"]}


@pytest.mark.parametrize("cursor", ["{not json", '{"v": 1, "requested": [1, 2]}', '"text"', '{"v": 99}'])
def test_an_unreadable_cursor_counts_as_empty(cursor):
    tick = plan_landing_tick({"a.fits": state()}, cursor, settle_seconds=0, route=route_all_to(), now=NOW)
    assert tick.by_partition == {("lcosim", "2026-11-20"): ["a.fits"]}


def test_the_daemons_sensor_reaps_dead_process_runs_and_waits_for_runs_in_flight(home, lcosim_night):
    import socket
    import uuid

    from dagster import DagsterRun, DagsterRunStatus, instance_for_test

    from reduction_assets.runs import HOME_TAG, HOST_TAG, LAUNCHED_BY_TAG, PID_TAG, claimed_slots

    deliver(frames_of(lcosim_night, "bias"), home.landing)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    with instance_for_test() as instance:
        dead = DagsterRun(
            job_name="j",
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.STARTED,
            tags={
                LAUNCHED_BY_TAG: "process",
                HOST_TAG: socket.gethostname(),
                HOME_TAG: str(home.root),
                PID_TAG: "999999",
            },
        )
        busy = DagsterRun(
            job_name="j",
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.STARTED,
            tags={"dagster/partition": "lcosim|2026-11-20"},
        )
        for run in (dead, busy):
            instance.add_run(run)
        instance.event_log_storage.set_concurrency_slots("stacking", 1)
        instance.event_log_storage.claim_concurrency_slot("stacking", dead.run_id, "master_bias")
        result = landing_sensor(build_sensor_context(cursor=None, instance=instance), home=resource)
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert claimed_slots(instance) == []
        assert instance.get_run_by_id(busy.run_id).status == DagsterRunStatus.STARTED  # not ours
        assert not result.run_requests
        assert "5 wait for the run in flight on lcosim|2026-11-20" in result.skip_reason.skip_message


def test_the_sensor_leaves_runs_of_a_live_process_alone(home):
    import socket
    import uuid

    from dagster import DagsterRun, DagsterRunStatus, instance_for_test

    from reduction_assets.runs import HOME_TAG, HOST_TAG, LAUNCHED_BY_TAG, PID_TAG

    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    with instance_for_test() as instance, home.lock():  # a live `process` holds the home's lock
        live = DagsterRun(
            job_name="j",
            run_id=str(uuid.uuid4()),
            status=DagsterRunStatus.STARTED,
            tags={
                LAUNCHED_BY_TAG: "process",
                HOST_TAG: socket.gethostname(),
                HOME_TAG: str(home.root),
                PID_TAG: "4242",
            },
        )
        instance.add_run(live)
        landing_sensor(build_sensor_context(cursor=None, instance=instance), home=resource)
        assert instance.get_run_by_id(live.run_id).status == DagsterRunStatus.STARTED
