"""archive_nights: every candidate of each night in turn, a failing store failing one file only, and
the tally of outcomes (without a catalog or stores: the per-file work is archive_one's tests')."""

import contextlib
import datetime as dt
import logging
from types import SimpleNamespace

from reduction_assets.storage import StoreError
from reduction_assets.tasks import archive as task
from reduction_assets.tasks.archive import (
    ALREADY_ARCHIVED,
    ARCHIVED,
    FAILED,
    INVALID,
    ArchivedFile,
    ArchiveNight,
    ArchiveSettings,
    ArchiveTally,
    Outcome,
    archive_nights,
)

NIGHT = dt.date(2024, 3, 1)


class FakeCatalog:
    def session(self):
        return contextlib.nullcontext(None)


def candidate(name: str, store: str = "raw"):
    return SimpleNamespace(name=name, level="raw", store=store)


def test_archive_nights_archives_each_night_in_turn_and_fails_only_the_file_a_store_refuses(
    monkeypatch, caplog
):
    nights = {
        "cam-a": [candidate("a1.fits"), candidate("a2.fits", "products")],
        "cam-b": [candidate("b1.fits")],
    }
    monkeypatch.setattr(task, "archive_candidates", lambda session, instrument, night: nights[instrument])
    sources = []

    def archive_one(candidate, *, source, instrument, **_):
        sources.append((candidate.name, source, instrument))
        if candidate.name == "a2.fits":
            raise StoreError("bucket unreachable")
        status = INVALID if candidate.name == "b1.fits" else ARCHIVED
        return Outcome(
            candidate.name, candidate.level, status, reason="no DATE-OBS" if status == INVALID else None
        )

    monkeypatch.setattr(task, "archive_one", archive_one)
    registry = {"cam-a": "instrument a", "cam-b": "instrument b"}
    with caplog.at_level(logging.WARNING):
        tally = archive_nights(
            [
                ArchiveNight("cam-a|2024-03-01", "cam-a", NIGHT),
                ArchiveNight("cam-b|2024-03-01", "cam-b", NIGHT),
            ],
            registry=registry,
            stores={"raw": "raw store", "products": "product store"},
            archive="archive store",
            catalog=FakeCatalog(),
            settings=ArchiveSettings(),
            notify=False,
            log=logging.getLogger("test"),
        )
    assert sources == [
        ("a1.fits", "raw store", "instrument a"),
        ("a2.fits", "product store", "instrument a"),
        ("b1.fits", "raw store", "instrument b"),
    ]
    assert [(f.partition, f.outcome.name, f.outcome.status) for f in tally.files] == [
        ("cam-a|2024-03-01", "a1.fits", ARCHIVED),
        ("cam-a|2024-03-01", "a2.fits", FAILED),
        ("cam-b|2024-03-01", "b1.fits", INVALID),
    ]
    assert tally.with_status(FAILED)[0].reason == "bucket unreachable"
    assert "a2.fits not archived: bucket unreachable" in caplog.text
    assert "b1.fits not archived: no DATE-OBS" in caplog.text


def test_the_tally_counts_every_status_in_order():
    outcomes = [("x", ARCHIVED), ("y", ALREADY_ARCHIVED), ("z", ALREADY_ARCHIVED)]
    tally = ArchiveTally(tuple(ArchivedFile("p", Outcome(name, "raw", status)) for name, status in outcomes))
    assert tally.counts() == {ARCHIVED: 1, ALREADY_ARCHIVED: 2, INVALID: 0, FAILED: 0}
    assert [o.name for o in tally.with_status(ALREADY_ARCHIVED)] == ["y", "z"]
