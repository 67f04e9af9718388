"""Steps that meet a transient database error are run again; steps that fail for any other reason are
not. Executed as the daemon's runs are, on a real Dagster instance."""

import pytest
from dagster import DagsterEventType, instance_for_test
from sqlalchemy.exc import IntegrityError, OperationalError

import reduction_assets.orchestration.assets.common as common
from reduction_assets.catalog import Catalog, Product, RawFrame
from reduction_assets.catalog.db import is_transient
from reduction_assets.orchestration.definitions import build_definitions
from reduction_assets.orchestration.partitions import partition_key
from reduction_assets.orchestration.resources import ReductionHomeResource
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    monkeypatch.setattr(common, "STEP_RETRY_SECONDS", 0.1)


def dropped_connection() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def fails_once(real, error):
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    flaky.calls = calls
    return flaky


def execute(home, job_name, run_config=None):
    definitions = build_definitions(ReductionHomeResource(home=str(home.root), settle_seconds=0))
    with instance_for_test() as instance:
        result = definitions.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            partition_key=partition_key("lcosim", NIGHT),
            run_config=run_config or {},
            raise_on_error=False,
        )
        events = [e.dagster_event_type for e in instance.all_logs(result.run_id)]
    return result, events


def count(home, table, **where):
    catalog = Catalog(home.catalog_url())
    try:
        with catalog.session() as session:
            rows = session.query(table).filter_by(**where).all()
        return len(rows)
    finally:
        catalog.dispose()


def test_errors_that_a_later_attempt_can_get_past_are_transient():
    assert is_transient(dropped_connection())
    wrapped = RuntimeError("recording failed")
    wrapped.__cause__ = dropped_connection()
    assert is_transient(wrapped)
    assert not is_transient(IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")))
    assert not is_transient(ValueError("bad header"))


def test_a_dropped_database_connection_during_ingestion_retries_the_step_and_the_run_succeeds(
    home, monkeypatch, lcosim_night
):
    import reduction_assets.orchestration.assets.raw as raw

    deliver(frames_of(lcosim_night, "bias"), home.landing)
    flaky = fails_once(raw.partition_counts, dropped_connection())
    monkeypatch.setattr(raw, "partition_counts", flaky)
    result, events = execute(home, "process_night")
    assert result.success and len(flaky.calls) == 2
    assert events.count(DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert events.count(DagsterEventType.STEP_RESTARTED) == 1
    assert count(home, RawFrame) == 5  # ingested once, not twice


def test_a_step_that_fails_for_another_reason_is_not_retried(home, monkeypatch, lcosim_night):
    import reduction_assets.orchestration.assets.raw as raw

    deliver(frames_of(lcosim_night, "bias"), home.landing)
    flaky = fails_once(raw.partition_counts, ValueError("a bug"))
    monkeypatch.setattr(raw, "partition_counts", flaky)
    result, events = execute(home, "process_night")
    assert not result.success and len(flaky.calls) == 1
    assert DagsterEventType.STEP_UP_FOR_RETRY not in events


def test_a_transient_error_while_recording_a_reduced_frame_retries_rather_than_marking_it_not_reducible(
    home, monkeypatch, reduced_lcosim_night
):
    import reduction_assets.tasks.science as science

    reduced_lcosim_night.copy_into(home)
    flaky = fails_once(science.record_product, dropped_connection())
    monkeypatch.setattr(science, "record_product", flaky)
    result, events = execute(
        home, "reduce_frames", {"ops": {"reduced_frames": {"config": {"full_refresh": True}}}}
    )
    assert result.success and events.count(DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert count(home, Product, status="reduced") == 12 and count(home, Product, status="not_reducible") == 0
