"""Engine, sessions and schema creation for the catalog."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from reduction_assets.catalog.models import Base, InstrumentRow, utcnow
from reduction_assets.instruments import Registry


def default_catalog_url(home: Path) -> str:
    return f"sqlite:///{home / 'catalog.sqlite'}"


def _check_driver(url: str) -> None:
    parsed = make_url(url)
    # SQLAlchemy 2.1 reads a bare postgresql:// URL as psycopg 3, which is not installed: insist on an
    # explicit driver rather than failing later with a confusing import error.
    if parsed.drivername == "postgresql":
        raise ValueError(
            "catalog URL must name its driver: use postgresql+psycopg2://... (got postgresql://)"
        )


class Catalog:
    """A handle on one catalog database. Cheap to create; create the schema with :meth:`create`."""

    def __init__(self, url: str, *, echo: bool = False):
        _check_driver(url)
        self.url = url
        kwargs: dict = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create(self) -> None:
        """Create missing tables (idempotent)."""
        Base.metadata.create_all(self.engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self._sessions() as session:
            with session.begin():
                yield session

    def sync_instruments(self, registry: Registry) -> None:
        with self.session() as session:
            for instrument in registry.instruments.values():
                row = session.get(InstrumentRow, instrument.name) or InstrumentRow(name=instrument.name)
                row.description = instrument.description
                row.site = instrument.site.name
                row.longitude = instrument.site.longitude
                row.timezone = instrument.site.timezone
                row.gain = instrument.gain
                row.read_noise = instrument.read_noise
                row.saturation = instrument.saturation
                row.updated_at = utcnow()
                session.add(row)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the webserver read while a run writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
