"""Catalog fixtures: the same tests on SQLite and on the local PostgreSQL server."""

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from reduction_assets.catalog import Catalog
from reduction_assets_tests.conftest import require

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"  # the local RabbitMQ


def postgres_available() -> bool:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return True
    except OperationalError:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog(request, tmp_path):
    """A fresh catalog; on PostgreSQL, in a schema of its own that is dropped afterwards."""
    if request.param == "sqlite":
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
        catalog.create()
        yield catalog
        catalog.dispose()
        return
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_URL}")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'create schema "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    catalog = Catalog(url)
    catalog.create()
    try:
        yield catalog
    finally:
        catalog.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def broker_available() -> bool:
    import kombu

    try:
        with kombu.Connection(BROKER, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False
