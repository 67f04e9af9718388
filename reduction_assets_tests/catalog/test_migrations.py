"""The catalog's schema comes from alembic migrations: fresh databases and catalogs of release 0.1.0
(made before migrations existed) both reach the current schema, in place, on SQLite and PostgreSQL."""

import datetime as dt
import json

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from reduction_assets.catalog import Calibration, Catalog
from reduction_assets.catalog.db import _alembic_config, _head_revision
from reduction_assets.catalog.models import Base
from reduction_assets_tests.catalog_fixtures import POSTGRES_URL, postgres_available
from reduction_assets_tests.conftest import require


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    """The URL of an empty database (on PostgreSQL a schema of its own, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    import uuid

    from sqlalchemy import create_engine

    schema = f"migrate_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'create schema "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def revision_of(catalog: Catalog) -> str | None:
    with catalog.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_a_fresh_database_gets_exactly_the_schema_of_the_models(empty_url):
    catalog = Catalog(empty_url)
    catalog.create()
    assert revision_of(catalog) == _head_revision()
    with catalog.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    catalog.create()  # idempotent
    catalog.dispose()


def test_a_catalog_of_release_0_1_0_is_upgraded_in_place_and_keeps_its_rows(empty_url):
    catalog = Catalog(empty_url)
    # What release 0.1.0 made: its tables (revision 0001 is generated from its models), no version
    # table, and rows.
    with catalog.engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0001")
        connection.execute(text("drop table alembic_version"))
        connection.execute(
            text(
                "insert into instruments (name, description, site, longitude, gain, read_noise, saturation, "
                "updated_at) values ('lcosim', '', 'SSO', 149.0, 1.6, 7.5, 62000, '2026-11-20 00:00:00')"
            )
        )
        connection.execute(
            text(
                "insert into raw_frames (instrument, night, frame_type, exptime, binning, date_obs, naxis1, "
                "naxis2, checksum, size_bytes, store_path, original_name, header, normalised, bad, "
                "ingested_at) values ('lcosim', '2026-11-20', 'bias', 0, '1x1', '2026-11-20 06:00:00', 528, "
                "512, 'abc', 10, 'raw/a.fits', 'a.fits', '{}', '{}', false, '2026-11-20 07:00:00')"
            )
        )
        connection.execute(
            text(
                "insert into calibrations (type, instrument, night, binning, filter, exptime, path, "
                "checksum, input_count, inputs, rejected, statistics, fingerprint, software_version, "
                "bad, created_at, updated_at) values ('bias', 'lcosim', '2026-11-20', '1x1', '', 0, "
                "'masters/b.fits', 'def', 1, :inputs, '[]', '{}', 'f', '0.1.0', false, "
                "'2026-11-20 08:00:00', '2026-11-20 08:00:00')"
            ),
            {"inputs": json.dumps([{"name": "a.fits", "checksum": "abc"}])},
        )
    assert revision_of(catalog) is None and "raw_frames" in inspect(catalog.engine).get_table_names()

    catalog.create()
    assert revision_of(catalog) == _head_revision()
    with catalog.session() as session:
        (master,) = session.query(Calibration).all()
        assert (master.readout, master.night, master.path) == (
            "512x528",
            dt.date(2026, 11, 20),
            "masters/b.fits",
        )
    catalog.dispose()


def test_threads_and_processes_opening_a_new_catalog_at_once_all_find_it_current(empty_url):
    """The code server evaluates both sensors at once: alembic's module-level state must not be
    shared by two migrations (they used to hang each other on PostgreSQL)."""
    import subprocess
    import sys
    import threading

    script = "import sys; from reduction_assets.catalog import Catalog; Catalog(sys.argv[1]).create()"
    others = [subprocess.Popen([sys.executable, "-c", script, empty_url]) for _ in range(2)]
    errors: list[BaseException] = []

    def first_use():
        try:
            Catalog(empty_url).create()
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=first_use, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [t.is_alive() for t in threads] == [False] * 4 and errors == []
    assert [p.wait(timeout=120) for p in others] == [0, 0]
    catalog = Catalog(empty_url)
    assert revision_of(catalog) == _head_revision()
    catalog.dispose()


def test_the_migrate_command_upgrades_once_and_then_does_nothing(tmp_path, capsys, monkeypatch):
    from reduction_assets.cli import main

    monkeypatch.delenv("REDUCTION_CATALOG_URL", raising=False)
    home = str(tmp_path / "home")
    assert main(["--home", home, "migrate"]) == 0
    first = capsys.readouterr().out
    assert main(["--home", home, "migrate"]) == 0
    second = capsys.readouterr().out
    assert f"schema upgraded from nothing to {_head_revision()}" in first
    assert f"schema {_head_revision()} is current, nothing to do" in second


def test_the_migrate_command_names_an_unusable_database_without_its_password(tmp_path, capsys, monkeypatch):
    from reduction_assets.cli import main

    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    url = "postgresql+psycopg2://postgres:s3cret-pw@127.0.0.1:5432/no_such_catalog_database"
    monkeypatch.setenv("REDUCTION_CATALOG_URL", url)
    assert main(["--home", str(tmp_path / "home"), "migrate"]) != 0
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.out + captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(
        "migrate: cannot use the catalog at postgresql+psycopg2://postgres:***@127.0.0.1:5432/no_such_catalog_database"
    )
    assert line.endswith('database "no_such_catalog_database" does not exist')
