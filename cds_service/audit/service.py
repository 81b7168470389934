"""The audit trail as the rest of the service sees it: one object built in the app lifespan.

``AuditTrail`` owns the database, the writer (the orchestrator's ``AuditSink``), the replay cache and the
queries the audit endpoints make. Every database failure surfaces as ``StoreUnavailable`` (HTTP 503,
retryable) and is logged without SQL or values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.database import Database, StoreUnavailable, describe_error
from cds_service.audit.feedback import FeedbackEntry
from cds_service.audit.pseudonym import PatientPseudonym
from cds_service.audit.queries import InvocationFilter
from cds_service.audit.replay_cache import DatabaseReplayCache
from cds_service.audit.repository import AuditStore
from cds_service.audit.spool import Spool
from cds_service.audit.stats import build_stats
from cds_service.audit.views import InvocationDetail, InvocationPage, StatsResponse
from cds_service.audit.writer import AuditWriter
from cds_service.catalog import Catalog
from cds_service.config import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

SPOOL_DIR = "audit-spool"


class AuditTrail:
    """Database, writer, replay cache and queries, with their lifecycle."""

    def __init__(self, settings: Settings, catalog: Catalog, database: Database | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.database = database or Database.from_settings(settings)
        self.store = AuditStore(self.database)
        self.pseudonym = PatientPseudonym(settings.patient_hash_secret)
        self.writer = AuditWriter(
            self.database,
            self.store,
            Spool(settings.data_dir / SPOOL_DIR, settings.audit_spool_max_bytes),
            self.pseudonym,
            catalog.version,
            queue_max=settings.audit_queue_max,
            batch_size=settings.audit_batch_size,
            retry_seconds=settings.audit_retry_seconds,
            shutdown_seconds=settings.audit_shutdown_seconds,
            migrate=settings.migrate_on_start,
        )
        # The jti check is on the clinical path: its own connections, a short lock timeout (it falls back
        # to memory rather than wait behind a large audit batch) and no fsync per entry.
        self.replay_database = Database(
            settings.sqlalchemy_url,
            connect_timeout=min(settings.database_connect_timeout_seconds, 2.0),
            lock_timeout=min(settings.database_lock_timeout_seconds, 1.0),
            durable=False,
        )
        self.replay_cache = DatabaseReplayCache(
            self.replay_database, retry_seconds=settings.audit_retry_seconds
        )
        self.feedback_stored = 0
        self.feedback_duplicates = 0
        self.feedback_failed = 0
        self.migration_failed = False

    async def start(self) -> None:
        """Migrate (a database that is down does not stop the service) and start the writer.

        When the migration fails the writer starts in the "store down" state: it retries (and migrates)
        every ``CDS_AUDIT_RETRY_SECONDS``, so the schema is there as soon as the database is.
        """
        if self.settings.migrate_on_start:
            try:
                revision = await self.database.run(self.database.migrate)
                logger.info("audit store %s at revision %s", self.database.describe(), revision)
            except (SQLAlchemyError, OSError) as exc:  # OSError: the SQLite directory is missing
                self.migration_failed = True
                logger.error(
                    "audit store %s unavailable at start-up (%s): hook calls are answered, their records "
                    "are spooled, feedback and audit queries answer 503 until it is back",
                    self.database.describe(),
                    describe_error(exc),
                )
                self.writer.store_down(exc)
        await self.writer.start()

    async def close(self) -> None:
        try:
            await self.writer.close()
        finally:
            self.database.close()
            self.replay_database.close()

    def counters(self) -> dict[str, int | bool]:
        """Everything a /metrics or /readyz endpoint needs about the audit trail."""
        return {
            **self.writer.counters(),
            "feedback_stored": self.feedback_stored,
            "feedback_duplicates": self.feedback_duplicates,
            "feedback_failed": self.feedback_failed,
            "replay_cache_fallbacks": self.replay_cache.fallbacks,
        }

    # -- feedback --------------------------------------------------------------------------------------

    async def record_feedback(self, entries: list[FeedbackEntry]) -> tuple[int, int]:
        """Store feedback durably (one transaction); StoreUnavailable when it could not be committed."""
        try:
            stored, duplicates = await self.database.run(self.store.write_feedback, entries)
        except SQLAlchemyError as exc:
            self.feedback_failed += len(entries)
            logger.error("feedback not stored (%d entries): %s", len(entries), describe_error(exc))
            raise StoreUnavailable(
                "The feedback store is unavailable: nothing was stored. Send the feedback again later."
            ) from exc
        self.feedback_stored += stored
        self.feedback_duplicates += duplicates
        return stored, duplicates

    # -- queries ---------------------------------------------------------------------------------------

    async def invocations(self, flt: InvocationFilter, limit: int, offset: int) -> InvocationPage:
        return await self._query(self.store.list_invocations, flt, limit, offset)

    async def invocation(self, hook_instance: str, record_id: str | None) -> InvocationDetail | None:
        return await self._query(self.store.invocation, hook_instance, record_id)

    async def stats(
        self, since: datetime | None, until: datetime | None, service: str | None
    ) -> StatsResponse:
        counts = await self._query(self.store.counts, since, until, service)
        rows = await self._query(self.store.feedback_rows, since, until, service)
        return build_stats(self.catalog, counts, rows, since=since, until=until, service=service)

    def patient_hash(self, patient_id: str) -> str:
        return self.pseudonym(patient_id)

    async def _query(self, func: Callable[..., T], *args: Any) -> T:
        try:
            return await self.database.run(func, *args)
        except SQLAlchemyError as exc:
            logger.error("audit query failed: %s", describe_error(exc))
            raise StoreUnavailable("The audit store is unavailable; retry later.") from exc
