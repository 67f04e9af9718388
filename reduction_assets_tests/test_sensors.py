"""The landing sensor: what it remembers, settling, routing to partitions, run keys, retries."""

import datetime as dt
import json
import os
import time

import pytest
from dagster import build_sensor_context

from reduction_assets.catalog.landing import DONE, FAILED, REQUESTED, LandingRecord, landing_records
from reduction_assets.fits.validate import FileState
from reduction_assets.orchestration.resources import LandingSourceResource, ReductionHomeResource
from reduction_assets.orchestration.runs import RUN_FAILED, RUN_IN_FLIGHT, RUN_SUCCEEDED, RunOutcome
from reduction_assets.orchestration.sensors import (
    MAX_ATTEMPTS,
    Settlement,
    describe_idle_tick,
    evaluate_landing,
    landing_requests,
    landing_sensor,
    legacy_requested,
    plan_landing_tick,
    sensor_retry_delay,
    settle_requests,
)
from reduction_assets.tasks.landing import Route, scan_landing
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of

NOW = 1_800_000_000.0

# landing/ alone: no S3 source to copy arrivals from.
LANDING_DIRECTORY = LandingSourceResource()


def state(size=100, age=60.0):
    return FileState(size, int((NOW - age) * 1e9))


def route_all_to(instrument="lcosim"):
    return lambda name: Route(instrument, NIGHT)


def remembered(
    tick, files, state=REQUESTED, *, requested_by="landing_sensor", at=NOW, retry_at=None, known=None
):
    """The catalog rows a tick's requests leave, as the next evaluation reads them."""
    _, rows = landing_requests(tick, files)
    known = dict(known or {})
    for row in rows:
        known[row.name] = LandingRecord(
            name=row.name,
            size_bytes=row.size_bytes,
            mtime_ns=row.mtime_ns,
            partition=row.partition,
            run_key=row.run_key,
            requested_by=requested_by,
            state=state,
            attempts=row.attempts,
            requested_at=utc(at),
            retry_at=retry_at,
        )
    return known


def utc(epoch):
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)


def test_new_settled_files_are_requested_once():
    files = {"a.fits": state(), "b.fits": state()}
    first = plan_landing_tick(files, {}, settle_seconds=5, route=route_all_to(), now=NOW)
    assert first.by_partition == {("lcosim", "2026-11-20"): ["a.fits", "b.fits"]}
    second = plan_landing_tick(
        files, remembered(first, files), settle_seconds=5, route=route_all_to(), now=NOW
    )
    assert second.by_partition == {} and second.already == 2


def test_files_still_changing_wait_until_they_settle():
    growing = {"a.fits": state(size=100, age=1.0)}
    tick = plan_landing_tick(growing, {}, settle_seconds=5, route=route_all_to(), now=NOW)
    assert tick.by_partition == {} and tick.waiting == ["a.fits"]
    settled = {"a.fits": state(size=5000, age=6.0)}
    later = plan_landing_tick(settled, {}, settle_seconds=5, route=route_all_to(), now=NOW)
    assert later.by_partition == {("lcosim", "2026-11-20"): ["a.fits"]}


def test_a_file_replaced_with_new_content_is_requested_again():
    files = {"a.fits": state(100)}
    first = plan_landing_tick(files, {}, settle_seconds=0, route=route_all_to(), now=NOW)
    changed = {"a.fits": FileState(200, int((NOW - 30) * 1e9))}
    again = plan_landing_tick(
        changed, remembered(first, files, DONE), settle_seconds=0, route=route_all_to(), now=NOW
    )
    assert again.by_partition == {("lcosim", "2026-11-20"): ["a.fits"]}
    assert landing_requests(again, changed)[0][0].run_key != landing_requests(first, files)[0][0].run_key


def test_files_of_a_failed_run_are_asked_for_again_after_the_delay_with_a_new_run_key():
    files = {"a.fits": state()}
    first = plan_landing_tick(files, {}, settle_seconds=0, route=route_all_to(), now=NOW)
    failed = remembered(first, files, FAILED, retry_at=utc(NOW + 120))
    early = plan_landing_tick(files, failed, settle_seconds=0, route=route_all_to(), now=NOW + 60)
    assert early.by_partition == {} and list(early.retry_later) == ["a.fits"]
    later = plan_landing_tick(files, failed, settle_seconds=0, route=route_all_to(), now=NOW + 121)
    assert later.by_partition == {("lcosim", "2026-11-20"): ["a.fits"]} and later.attempts == {"a.fits": 2}
    [retry], _ = landing_requests(later, files)
    assert retry.run_key != landing_requests(first, files)[0][0].run_key
    assert retry.tags["reduction_assets/attempt"] == "2"


def test_a_file_that_failed_max_attempts_times_waits_for_an_operator():
    files = {"a.fits": state()}
    tick = plan_landing_tick(files, {}, settle_seconds=0, route=route_all_to(), now=NOW)
    known = remembered(tick, files, FAILED, retry_at=utc(NOW))
    for _ in range(MAX_ATTEMPTS - 1):
        tick = plan_landing_tick(files, known, settle_seconds=0, route=route_all_to(), now=NOW)
        known = remembered(tick, files, FAILED, retry_at=utc(NOW))
    assert tick.attempts == {"a.fits": MAX_ATTEMPTS}
    last = plan_landing_tick(files, known, settle_seconds=0, route=route_all_to(), now=NOW)
    assert last.by_partition == {} and last.gave_up == ["a.fits"]
    assert "1 not asked for again after 4 failed runs" in describe_idle_tick(last)
    touched = {"a.fits": state(age=30)}
    assert plan_landing_tick(touched, known, settle_seconds=0, route=route_all_to(), now=NOW).attempts == {
        "a.fits": 1
    }


def test_requests_are_settled_by_the_outcome_of_their_run_key():
    files = {"a.fits": state(), "b.fits": state()}
    tick = plan_landing_tick(files, {}, settle_seconds=0, route=route_all_to(), now=NOW)
    known = remembered(tick, files)
    [request], _ = landing_requests(tick, files)

    def settle(outcome):
        return settle_requests(known, lambda key: outcome, now=NOW + 5, retry_delay=sensor_retry_delay)

    assert settle(RunOutcome(RUN_SUCCEEDED, "r1")) == ([Settlement(request.run_key, DONE, "r1")], set())
    assert settle(RunOutcome(RUN_IN_FLIGHT, "r1")) == ([], set())
    assert settle(RunOutcome(RUN_FAILED, "r1")) == (
        [Settlement(request.run_key, FAILED, "r1", utc(NOW + 5) + dt.timedelta(minutes=2))],
        set(),
    )
    assert settle(None) == ([], {request.run_key})


def test_a_request_that_was_never_launched_is_made_again_under_the_same_run_key():
    # "Test sensor" in the UI evaluates without launching: the files must not be lost.
    files = {"a.fits": state(), "b.fits": state()}
    tick = plan_landing_tick(files, {}, settle_seconds=0, route=route_all_to(), now=NOW)
    [first], _ = landing_requests(tick, files)
    again = plan_landing_tick(
        files,
        remembered(tick, files),
        settle_seconds=0,
        route=route_all_to(),
        now=NOW,
        unlaunched={first.run_key},
    )
    [second], _ = landing_requests(again, files)
    assert second.run_key == first.run_key and again.attempts == {"a.fits": 1, "b.fits": 1}


def test_failed_runs_are_retried_after_2_8_and_32_minutes():
    assert [sensor_retry_delay(n).total_seconds() / 60 for n in (1, 2, 3)] == [2, 8, 32]


def test_files_gone_from_landing_are_forgotten(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:2], home.landing)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    evaluate_landing(resource)
    with resource.catalog().session() as session:
        assert len(landing_records(session)) == 2
    next(home.landing.iterdir()).unlink()
    evaluate_landing(resource)
    with resource.catalog().session() as session:
        assert len(landing_records(session)) == 1


def test_unroutable_files_go_to_landing_rejects():
    from reduction_assets.fits.headers import FrameRejected

    def route(name):
        if name == "bad.fits":
            raise FrameRejected("not_fits", "no")
        return Route("st7", NIGHT)

    tick = plan_landing_tick(
        {"bad.fits": state(), "ok.fits": state()}, {}, settle_seconds=0, route=route, now=NOW
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
    result = landing_sensor(
        build_sensor_context(cursor=None), home=resource, landing_source=LANDING_DIRECTORY
    )
    requests = {r.partition_key or "rejects": r for r in result.run_requests}
    assert set(requests) == {"lcosim|2026-11-20", "noirsim|2026-11-20", "rejects"}
    lco = requests["lcosim|2026-11-20"]
    assert len(lco.run_config["ops"]["raw_frames"]["config"]["files"]) == 5
    assert requests["rejects"].run_config["ops"]["landing_rejects"]["config"]["files"] == ["junk.fits"]

    idle = landing_sensor(
        build_sensor_context(cursor=result.cursor), home=resource, landing_source=LANDING_DIRECTORY
    )
    assert len(result.cursor) < 200 and json.loads(result.cursor)["requested"] == 11
    assert not idle.run_requests
    assert (
        "no new files" in idle.skip_reason.skip_message
        and "11 already requested" in idle.skip_reason.skip_message
    )


def test_idle_tick_says_which_files_are_waiting(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, age_seconds=0)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=600)
    result = landing_sensor(
        build_sensor_context(cursor=None), home=resource, landing_source=LANDING_DIRECTORY
    )
    assert not result.run_requests
    assert "1 waiting to settle" in result.skip_reason.skip_message


def test_a_night_whose_partition_does_not_exist_yet_is_asked_for_again_later():
    import datetime as dt

    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    tick = plan_landing_tick(
        {"early.fits": state()}, {}, settle_seconds=0, route=lambda name: Route("lcosim", tomorrow), now=NOW
    )
    assert tick.by_partition == {} and tick.rejects == [] and tick.waiting == []
    assert tick.not_open == {"early.fits": tomorrow.isoformat()} and tick.attempts == {}


def test_a_night_before_the_first_partition_is_rejected():
    import datetime as dt

    tick = plan_landing_tick(
        {"old.fits": state()},
        {},
        settle_seconds=0,
        route=lambda name: Route("lcosim", dt.date(2001, 1, 1)),
        now=NOW,
    )
    assert tick.rejects == ["old.fits"]


def test_files_of_a_partition_with_a_run_in_flight_wait_for_it():
    files = {"a.fits": state(), "b.fits": state()}
    tick = plan_landing_tick(
        files, {}, settle_seconds=0, route=route_all_to(), now=NOW, busy={"lcosim|2026-11-20"}
    )
    assert tick.by_partition == {} and tick.deferred == {
        "a.fits": "lcosim|2026-11-20",
        "b.fits": "lcosim|2026-11-20",
    }
    assert landing_requests(tick, files) == ([], [])  # nothing remembered: asked for again later
    later = plan_landing_tick(files, {}, settle_seconds=0, route=route_all_to(), now=NOW)
    assert later.by_partition == {("lcosim", "2026-11-20"): ["a.fits", "b.fits"]}


@pytest.mark.parametrize(
    "cursor", [None, "{not json", '{"v": 1, "requested": [1, 2]}', '"text"', '{"v": 99}']
)
def test_a_cursor_that_is_not_one_of_release_0_2_imports_nothing(cursor):
    assert legacy_requested(cursor) == {}


def test_a_cursor_of_release_0_2_is_imported_as_done_once(home, lcosim_night):
    deliver(frames_of(lcosim_night, "bias")[:2], home.landing)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    stamps = {p.name: f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in home.landing.iterdir()}
    old_cursor = json.dumps({"v": 1, "requested": stamps})
    result = landing_sensor(
        build_sensor_context(cursor=old_cursor), home=resource, landing_source=LANDING_DIRECTORY
    )
    assert not result.run_requests and json.loads(result.cursor)["v"] == 2
    assert "2 already requested" in result.skip_reason.skip_message


def test_the_daemons_sensor_reaps_dead_process_runs_and_waits_for_runs_in_flight(home, lcosim_night):
    import socket
    import uuid

    from dagster import DagsterRun, DagsterRunStatus, instance_for_test

    from reduction_assets.orchestration.runs import (
        HOME_TAG,
        HOST_TAG,
        LAUNCHED_BY_TAG,
        PID_TAG,
        claimed_slots,
    )

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
        result = landing_sensor(
            build_sensor_context(cursor=None, instance=instance),
            home=resource,
            landing_source=LANDING_DIRECTORY,
        )
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert claimed_slots(instance) == []
        assert instance.get_run_by_id(busy.run_id).status == DagsterRunStatus.STARTED  # not ours
        assert not result.run_requests
        assert "5 wait for the run in flight on lcosim|2026-11-20" in result.skip_reason.skip_message


def test_the_sensor_leaves_runs_of_a_live_process_alone(home):
    import socket
    import uuid

    from dagster import DagsterRun, DagsterRunStatus, instance_for_test

    from reduction_assets.orchestration.runs import HOME_TAG, HOST_TAG, LAUNCHED_BY_TAG, PID_TAG

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
        landing_sensor(
            build_sensor_context(cursor=None, instance=instance),
            home=resource,
            landing_source=LANDING_DIRECTORY,
        )
        assert instance.get_run_by_id(live.run_id).status == DagsterRunStatus.STARTED


def test_the_cursor_stays_the_same_size_as_landing_grows_from_100_to_10000_files(home, lcosim_night):
    from dagster import DagsterRun, DagsterRunStatus, instance_for_test

    from reduction_assets.orchestration.runs import RUN_KEY_TAG

    source = home.landing / "source.fits"
    deliver(frames_of(lcosim_night, "bias")[:1], home.landing, ["source.fits"])
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    sizes, cursor = {}, None
    with instance_for_test() as instance:
        for total in (100, 1_000, 10_000):
            for i in range(len(list(home.landing.iterdir())), total):
                os.link(source, home.landing / f"frame_{i:05d}.fits")  # hard links: same settled mtime
            result = landing_sensor(
                build_sensor_context(cursor=cursor, instance=instance),
                home=resource,
                landing_source=LANDING_DIRECTORY,
            )
            for request in result.run_requests:  # as the daemon would launch them, and they succeed
                run = DagsterRun(job_name="process_night", status=DagsterRunStatus.SUCCESS)
                instance.add_run(run._replace(tags={RUN_KEY_TAG: request.run_key}))
            idle = landing_sensor(
                build_sensor_context(cursor=result.cursor, instance=instance),
                home=resource,
                landing_source=LANDING_DIRECTORY,
            )
            assert not idle.run_requests and f"{total} already requested" in idle.skip_reason.skip_message
            sizes[total] = (len(result.cursor), len(idle.cursor))
            cursor = idle.cursor
    lengths = [n for pair in sizes.values() for n in pair]
    print("cursor bytes (after the tick, after an idle tick):", sizes)
    assert max(lengths) < 160 and max(lengths) - min(lengths) <= 10, sizes


def test_files_of_a_failed_daemon_run_are_requested_again_later_and_after_4_failures_no_more(
    home, lcosim_night
):
    from dagster import DagsterRun, DagsterRunStatus, instance_for_test

    from reduction_assets.orchestration.runs import RUN_KEY_TAG, run_key_outcome

    deliver(frames_of(lcosim_night, "bias")[:2], home.landing)
    resource = ReductionHomeResource(home=str(home.root), settle_seconds=0)
    now = time.time()
    with instance_for_test() as instance:

        def tick(at):
            return evaluate_landing(resource, outcome_of=lambda key: run_key_outcome(instance, key), now=at)

        for attempt in range(1, MAX_ATTEMPTS + 1):
            _, result = tick(now)
            [request] = result.run_requests
            assert request.tags["reduction_assets/attempt"] == str(attempt)
            run = DagsterRun(job_name="process_night", status=DagsterRunStatus.FAILURE)
            instance.add_run(run._replace(tags={RUN_KEY_TAG: request.run_key}))
            waiting, result = tick(now + 1)
            assert not result.run_requests
            if attempt < MAX_ATTEMPTS:
                assert len(waiting.retry_later) == 2
            now += sensor_retry_delay(attempt).total_seconds() + 2
        gave_up, result = tick(now)
        assert not result.run_requests and len(gave_up.gave_up) == 2
        assert "2 not asked for again after 4 failed runs" in result.skip_reason.skip_message
