"""The database: one SQLAlchemy engine per process, its own worker threads, and migrations (Alembic).

SQLite (the embedded default, a file in ``CDS_DATA_DIR``) and PostgreSQL (``CDS_DATABASE_URL``) are both
first-class: the same tables, migrations and tests. Database work is synchronous SQLAlchemy run on a small
dedicated thread pool (``Database.run``) so that a slow or unreachable database never blocks the event
loop, nor the default executor other code relies on.

Failures are bounded in time: a connect timeout (PostgreSQL) and a lock timeout (SQLite busy timeout,
PostgreSQL ``lock_timeout``). Error messages from the driver are reduced by ``describe_error`` to the
driver's exception class and first line: SQLAlchemy's own message carries the SQL and, without
``hide_parameters``, the values.

Migrations run at start-up and from ``cds-service migrate``. Several workers may start at once, so the
upgrade is serialised: a PostgreSQL advisory lock (taken in ``migrations/env.py``) or, for SQLite, an
exclusive lock on a file beside the database; within one process, a thread lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cds_service.config import Settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
T = TypeVar("T")
#: Alembic's ``context`` is module-global: one migration at a time per process (two apps in one
#: process, as in tests, or a writer retrying while another app starts).
_PROCESS_MIGRATION_LOCK = threading.Lock()


class StoreUnavailable(Exception):
    """The database could not be used (down, locked, not migrated). Safe to show: no SQL, no values."""


def describe_error(exc: BaseException) -> str:
    """A short, PHI-free description of a database error for logs: driver class and first line."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = (str(original).strip().splitlines() or [""])[0]
    return f"{type(original).__name__}: {first[:200]}"


def normalise_url(url: str | URL) -> URL:
    """``postgres://`` and ``postgresql://`` use psycopg 3 (the driver shipped); others are kept."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class Database:
    """The engine, a thread pool for its blocking calls, and the migration entry point."""

    def __init__(
        self,
        url: str | URL,
        *,
        connect_timeout: float = 3.0,
        lock_timeout: float = 5.0,
        threads: int = 4,
        durable: bool = True,
    ) -> None:
        """``durable=False`` (SQLite): commits are not fsynced one by one (WAL ``synchronous=NORMAL``);
        for data whose loss in a power cut is harmless, such as the JWT replay table."""
        self.url = normalise_url(url)
        self.engine = _create_engine(self.url, connect_timeout, lock_timeout, durable)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cds-db")

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.sqlalchemy_url,
            connect_timeout=settings.database_connect_timeout_seconds,
            lock_timeout=settings.database_lock_timeout_seconds,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        """The URL without its password, for logs."""
        return self.url.render_as_string(hide_password=True)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking database work on this database's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(func, *args))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def migrate(self) -> str:
        """Upgrade the schema to the newest migration; returns the revision now current."""
        config = alembic_config()
        with _PROCESS_MIGRATION_LOCK, self._migration_lock(), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            revision = MigrationContext.configure(connection).get_current_revision()
        return revision or "base"

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """SQLite: serialise workers migrating the same file (PostgreSQL locks in migrations/env.py)."""
        if self.dialect != "sqlite" or not self.url.database or self.url.database == ":memory:":
            yield
            return
        lock_path = Path(self.url.database).with_name(Path(self.url.database).name + ".migrate.lock")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def alembic_config() -> Config:
    """Alembic configured in code: the scripts ship inside the package (no alembic.ini needed)."""
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# The audit trace (~20 KB a call) is serialised in the worker that answers EHR calls: orjson is ~5x faster
# than the stdlib encoder SQLAlchemy uses by default, and its output is the same JSON.
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def _create_engine(url: URL, connect_timeout: float, lock_timeout: float, durable: bool) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            hide_parameters=True,
            connect_args={"timeout": lock_timeout, "check_same_thread": False},
            **JSON_CODEC,
        )
        busy_ms = int(lock_timeout * 1000)
        synchronous = "FULL" if durable else "NORMAL"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: readers never block the writer; synchronous=FULL: a commit survives power loss, which
            # is what "feedback is durably stored" promises.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    if url.get_backend_name() == "postgresql":
        return create_engine(
            url,
            hide_parameters=True,
            **JSON_CODEC,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            pool_timeout=max(connect_timeout, 1.0),
            connect_args={
                # libpq: whole seconds, at least 2
                "connect_timeout": max(2, math.ceil(connect_timeout)),
                "options": f"-c lock_timeout={int(lock_timeout * 1000)}",
                "application_name": "cds-service",
            },
        )
    return create_engine(url, hide_parameters=True, pool_pre_ping=True, **JSON_CODEC)


def migrate_command(settings: Settings) -> int:
    """``cds-service migrate``: apply migrations and report the revision (exit 1 when the DB fails)."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database.from_settings(settings)
    try:
        revision = database.migrate()
    except (SQLAlchemyError, OSError) as exc:
        logger.error("migration failed on %s: %s", database.describe(), describe_error(exc))
        print(f"cds-service: migration failed: {describe_error(exc)}")  # noqa: T201
        return 1
    finally:
        database.close()
    print(f"cds-service: {database.describe()} is at revision {revision}")  # noqa: T201
    return 0
