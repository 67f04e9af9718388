"""The catalog behaves the same on SQLite and PostgreSQL."""

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from reduction_assets.catalog import Catalog, CatalogUnavailable, InstrumentRow, RawFrame
from reduction_assets.catalog.quality import MetricRow, partition_metrics, record_partition_metrics
from reduction_assets.catalog.reports import progress_rows, quarantine_rows
from reduction_assets.storage import LocalStore
from reduction_assets.tasks.ingest import Ingestor
from reduction_assets_tests.catalog_fixtures import catalog  # noqa: F401  (fixture)
from reduction_assets_tests.conftest import NIGHT, deliver, frames_of


def test_schema_has_the_foundation_tables(catalog):  # noqa: F811
    catalog.create()  # idempotent
    assert {"instruments", "raw_frames", "raw_duplicates", "quarantine"} <= set(
        inspect(catalog.engine).get_table_names()
    )


def test_instruments_are_synchronised_from_the_registry(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    catalog.sync_instruments(registry)
    with catalog.session() as session:
        rows = {row.name: row for row in session.scalars(select(InstrumentRow))}
    assert sorted(rows) == ["lcosim", "noirsim", "st7"]
    assert rows["st7"].timezone == "America/Toronto" and rows["st7"].gain == pytest.approx(2.55)


def _frame(checksum: str, name: str) -> RawFrame:
    return RawFrame(
        instrument="lcosim",
        night=NIGHT,
        frame_type="bias",
        filter=None,
        exptime=0.0,
        binning="1x1",
        date_obs=dt.datetime(2026, 11, 20, 6, 0),
        object=None,
        ra=None,
        dec=None,
        naxis1=144,
        naxis2=128,
        checksum=checksum,
        size_bytes=1,
        store_path=f"lcosim/{name}",
        original_name=name,
        header={},
        normalised={},
    )


def test_a_checksum_can_be_recorded_only_once(catalog, registry):  # noqa: F811
    catalog.sync_instruments(registry)
    with catalog.session() as session:
        session.add(_frame("a" * 64, "one.fits"))
    with pytest.raises(IntegrityError), catalog.session() as session:
        session.add(_frame("a" * 64, "two.fits"))
    with catalog.session() as session:  # the failed transaction left nothing behind
        assert len(list(session.scalars(select(RawFrame)))) == 1


def test_ingestion_and_progress_on_either_database(catalog, registry, tmp_path, lcosim_night):  # noqa: F811
    catalog.sync_instruments(registry)
    landing = tmp_path / "landing"
    bias = frames_of(lcosim_night, "bias")
    names = deliver(bias + [bias[0]], landing, [p.name for p in bias] + ["again.fits"])
    (landing / "junk.fits").write_text("not fits")
    ingestor = Ingestor(
        landing=landing,
        registry=registry,
        catalog=catalog,
        raw_store=LocalStore(tmp_path / "raw"),
        quarantine_store=LocalStore(tmp_path / "q"),
    )
    report = ingestor.ingest(names + ["junk.fits"])
    assert report.summary()["ingested"] == 5 and report.summary()["duplicates"] == 1
    with catalog.session() as session:
        (row,) = progress_rows(session, NIGHT, NIGHT, ["lcosim"])
        quarantine = quarantine_rows(session)
    assert (row["raw"], row["duplicates"]) == (5, 1)
    assert [q["reason"] for q in quarantine] == ["not_fits"]


def test_a_bare_postgresql_url_is_refused_with_the_fix():
    with pytest.raises(CatalogUnavailable, match=r"postgresql\+psycopg2"):
        Catalog("postgresql://postgres@127.0.0.1/test")


def test_overlapping_runs_record_a_partitions_quality_metrics_once(catalog):  # noqa: F811
    # Two runs of one night record its metrics at the same time: the second waits for the first's
    # transaction instead of inserting beside its rows (which the (subject, metric) key refuses).
    rows = [
        MetricRow("lcosim", NIGHT, f"frame_{k}.fits", "raw", "bias", "", "bias_level", 1000.0 + k, "ADU",
                  None, dt.datetime(2026, 11, 20, 6, k))
        for k in range(5)
    ]  # fmt: skip
    first_written, release = threading.Event(), threading.Event()
    results, errors = {}, []

    def record(name: str, before=None, after=None) -> None:
        try:
            if before:
                before.wait(10)
            with catalog.session() as session:
                results[name] = record_partition_metrics(session, "lcosim", NIGHT, rows)
                if after:
                    after.set()
                    release.wait(10)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    runs = [
        threading.Thread(target=record, args=("first",), kwargs={"after": first_written}),
        threading.Thread(target=record, args=("second",), kwargs={"before": first_written}),
    ]
    for run in runs:
        run.start()
    time.sleep(1.0)  # the second run reaches the partition while the first still holds it
    assert "second" not in results
    release.set()
    for run in runs:
        run.join(30)
    assert errors == []
    assert results["first"] == len(rows)
    if catalog.engine.dialect.name == "postgresql":
        assert results["second"] == 0  # it waited, then found the partition as it would write it
    with catalog.session() as session:
        assert len(partition_metrics(session, "lcosim", NIGHT)) == len(rows)
