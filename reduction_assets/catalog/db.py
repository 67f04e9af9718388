"""Engine, sessions and schema creation for the catalog."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from reduction_assets.catalog.models import InstrumentRow, utcnow
from reduction_assets.instruments import Registry
from reduction_assets.support.secrets import masked_url, without_credentials


def default_catalog_url(home: Path) -> str:
    return f"sqlite:///{home / 'catalog.sqlite'}"


# Callers catch these by the catalog's names: nothing outside catalog/ imports SQLAlchemy.
DuplicateRow = IntegrityError  # a unique constraint refused an insert: someone else recorded it first

# Transient database errors (a locked SQLite file, a dropped PostgreSQL connection) are retried.
retry_transient = retry(
    retry=retry_if_exception_type(OperationalError),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.2, max=5),
    reraise=True,
)


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a database error that a later attempt can get past: a
    dropped or refused connection, a server restarting, a locked SQLite file. Constraint violations,
    bad SQL and bad data are not."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OperationalError | InterfaceError):
            return True
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return True
        err = err.__cause__ or err.__context__
    return False


class CatalogUnavailable(RuntimeError):
    """The catalog database cannot be used; the message is one line naming the cause (no secrets)."""


def safe_url(url: str) -> str:
    """The URL with its password and secret-like query parameters masked, for messages and logs."""
    return masked_url(url)


def _check_driver(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise CatalogUnavailable(
            "the catalog URL cannot be parsed; expected e.g. "
            "sqlite:////path/catalog.sqlite or postgresql+psycopg2://..."
        ) from err
    # SQLAlchemy 2.1 reads a bare postgresql:// URL as psycopg 3, which is not installed: insist on an
    # explicit driver rather than failing later with a confusing import error.
    if parsed.drivername == "postgresql":
        raise CatalogUnavailable(
            f"catalog URL {safe_url(url)} must name its driver: use postgresql+psycopg2://..."
        )


def _cause(err: BaseException) -> str:
    """The first line of the database driver's own message (it names the cause plainly), without
    credentials (a driver may quote the connection string it got)."""
    original = getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return without_credentials(lines[0]) if lines else type(original).__name__


class Catalog:
    """A handle on one catalog database. Cheap to create; create the schema with :meth:`create`."""

    def __init__(self, url: str, *, echo: bool = False, connect_timeout: float = 10.0):
        _check_driver(url)
        self.url = url
        kwargs: dict = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": max(int(connect_timeout), 1)}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (ArgumentError, ImportError) as err:
            raise CatalogUnavailable(f"catalog {safe_url(url)}: {_cause(err)}") from err
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._synchronised: tuple | None = None

    def create(self) -> None:
        """Bring the schema to the current version with the alembic migrations (idempotent; only
        reads when it is current). A catalog made by release 0.1.0, before migrations existed, is
        recognised by its tables and upgraded in place."""
        with self.engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revision = _revision(connection)
        if revision == _head_revision() and tables:
            return
        try:
            with _MIGRATING, self.engine.begin() as connection:
                # Processes (code server, workers, CLI) starting at once on a new PostgreSQL
                # database take turns; the later ones find the schema current.
                hold_advisory_lock(connection, MIGRATION_LOCK_KEY)
                tables = set(inspect(connection).get_table_names())
                revision = _revision(connection)
                if revision == _head_revision() and tables:
                    return
                config = _alembic_config(connection)
                if revision is None and "raw_frames" in tables:
                    command.stamp(config, BASELINE_REVISION)
                command.upgrade(config, "head")
        except DBAPIError:
            # Another process upgraded the same SQLite file at the same moment (PostgreSQL takes
            # turns above): fine once that one has committed.
            for pause in (0.0, 0.5, 1.0, 2.0, 4.0):
                time.sleep(pause)
                with self.engine.connect() as connection:
                    if _revision(connection) == _head_revision():
                        return
            raise

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to the current release; returns the alembic revisions before (None: an
        empty database or a catalog of 0.1.0) and after. Running it again changes nothing. Raises
        :class:`CatalogUnavailable` with one line when the database cannot be used."""
        try:
            with self.engine.connect() as connection:
                before = _revision(connection)
            self.create()
            with self.engine.connect() as connection:
                after = _revision(connection)
        except DBAPIError as err:
            raise CatalogUnavailable(
                f"cannot use the catalog at {safe_url(self.url)}: {_cause(err)}"
            ) from err
        return before, after

    def check(self) -> None:
        """Connect once and create missing tables; raises :class:`CatalogUnavailable` with one line
        naming the cause (wrong host or port, missing database, no such folder, bad credentials)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("select 1"))
            self.create()
        except DBAPIError as err:
            raise CatalogUnavailable(
                f"cannot use the catalog at {safe_url(self.url)}: {_cause(err)}"
            ) from err

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def sync_instruments(self, registry: Registry) -> None:
        """Make the instruments table describe ``registry``. Writes only rows that differ, and is
        done once per registry and process: a run that only reads never needs the writer lock."""
        wanted = {
            instrument.name: dict(
                description=instrument.description,
                site=instrument.site.name,
                longitude=instrument.site.longitude,
                timezone=instrument.site.timezone,
                gain=instrument.gain,
                read_noise=instrument.read_noise,
                saturation=instrument.saturation,
            )
            for instrument in registry.instruments.values()
        }
        signature = tuple(sorted((name, tuple(sorted(values.items()))) for name, values in wanted.items()))
        if self._synchronised == signature:
            return
        with self.session() as session:
            rows = {row.name: row for row in session.scalars(select(InstrumentRow))}
            for name, values in wanted.items():
                row = rows.get(name)
                if row is not None and all(getattr(row, k) == v for k, v in values.items()):
                    continue
                row = row or InstrumentRow(name=name)
                for key, value in values.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
                session.add(row)
        self._synchronised = signature

    def dispose(self) -> None:
        self.engine.dispose()


MIGRATIONS = Path(__file__).with_name("migrations")
# alembic keeps the migration being run in module-level state: two threads of one process (the
# code server evaluates both sensors at once) must not migrate at the same time, or each runs
# the other's steps on its own connection and both hang.
_MIGRATING = threading.Lock()
MIGRATION_LOCK_KEY = 0x7265647563  # "reduc": the catalog's PostgreSQL advisory lock for migrations
BASELINE_REVISION = "0001"  # the schema of release 0.1.0, which had no migrations


def advisory_key(name: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of a named thing to serialise on."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def hold_advisory_lock(executor: Connection | Session, key: int) -> None:
    """On PostgreSQL, wait for and hold the transaction-level advisory lock ``key`` until the
    transaction ends (other transactions asking for it wait); elsewhere nothing (SQLite has one
    writer anyway)."""
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    if bind.dialect.name == "postgresql":
        executor.execute(text("select pg_advisory_xact_lock(:key)"), {"key": key})


def _revision(connection) -> str | None:
    """The alembic revision of the connected database (None: empty, or a catalog of 0.1.0)."""
    return MigrationContext.configure(connection).get_current_revision()


def _alembic_config(connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the webserver read while a run writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
