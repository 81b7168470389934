"""Alembic environment: runs on the connection the service hands over (``Database.migrate``).

Run from the ``alembic`` command line instead, it connects with the service's own settings. On
PostgreSQL a transaction-scoped advisory lock serialises workers that start together; SQLite is
serialised by ``Database.migrate`` with a file lock. Logging is left as the service configured it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from cds_service.audit.tables import metadata

#: Arbitrary constant naming the migration lock among the database's advisory locks.
ADVISORY_LOCK_KEY = 0x0CD5_A0D1


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    from cds_service.audit.database import Database
    from cds_service.config import Settings

    database = Database.from_settings(Settings())
    try:
        with database.engine.begin() as own:
            run_on(own)
    finally:
        database.close()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run()
