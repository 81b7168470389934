"""The audit writer: hook-call records written off the request path, never lost silently.

``submit`` (the orchestrator's ``AuditSink``) builds the compact record and puts it on a bounded
in-memory queue; it never blocks, never raises and never touches the database, so the clinical answer
neither waits for nor fails because of the audit store. A background task (started and stopped in the
app lifespan) drains the queue in batches on the database's threads.

When the store fails, the batch goes to the durable spool (``audit.spool``) and the store is marked
down: new batches go straight to the spool, and every ``CDS_AUDIT_RETRY_SECONDS`` the writer tries the
store again, replaying the spool first. At start-up, spool files left by an earlier run are replayed.
On shutdown the queue is written within ``CDS_AUDIT_SHUTDOWN_SECONDS``; what is left is spooled.

Nothing disappears without a trace: a full queue, a full or unwritable spool, or an unreadable spool line
is counted (``dropped`` / ``lost``) and logged as an error. ``counters()`` gives every count for
``/metrics`` and ``/readyz``. The one unavoidable gap: records still in memory when the process is
killed (SIGKILL, power loss) are gone; the queue is normally empty within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from cds_service.audit.counters import WriterCounters
from cds_service.audit.database import Database, describe_error
from cds_service.audit.pseudonym import PatientPseudonym
from cds_service.audit.records import InvocationRecord, build_record
from cds_service.audit.repository import AuditStore
from cds_service.audit.spool import Spool, SpoolFull, SpoolUnavailable
from cds_service.audit.throttle import ThrottledLog
from cds_service.hookcall import HookOutcome

logger = logging.getLogger(__name__)


class AuditWriter:
    """``AuditSink`` for the orchestrator; owns the queue, the background task and the spool."""

    def __init__(
        self,
        database: Database,
        store: AuditStore,
        spool: Spool,
        pseudonym: PatientPseudonym,
        rules_version: str,
        *,
        queue_max: int,
        batch_size: int,
        retry_seconds: float,
        shutdown_seconds: float,
        migrate: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._prepare = database.migrate if migrate else database.ping
        self._store = store
        self._spool = spool
        self._pseudonym = pseudonym
        self._rules_version = rules_version
        self._queue: deque[InvocationRecord] = deque()
        self._in_flight: list[InvocationRecord] = []
        self._queue_max = queue_max
        self._batch_size = batch_size
        self._retry_seconds = retry_seconds
        self._shutdown_seconds = shutdown_seconds
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._spool_ok = True
        self._orphan_backlog = 0
        self._next_retry = 0.0
        self._errors = ThrottledLog(logger, clock)
        self.c = WriterCounters()

    # -- AuditSink -------------------------------------------------------------------------------------

    def submit(self, outcome: HookOutcome) -> None:
        """Queue the call's record. Returns at once; never raises (the clinical answer comes first)."""
        try:
            record = build_record(outcome, self._pseudonym, self._rules_version)
        except Exception:
            self.c.build_errors += 1
            logger.exception("audit: could not build the record of hookInstance=%s", _safe_instance(outcome))
            return
        self.enqueue(record)

    def enqueue(self, record: InvocationRecord) -> None:
        if len(self._queue) >= self._queue_max:
            self.c.dropped += 1
            self._errors.error(
                "queue-full",
                "audit: queue full (%d records); a record was dropped (dropped=%d): the store or the "
                "spool cannot keep up",
                self._queue_max,
                self.c.dropped,
            )
            return
        self._queue.append(record)
        self.c.submitted += 1
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool, count what earlier runs left in it, start the background task."""
        try:
            await self._database.run(self._spool.open)
        except SpoolUnavailable as exc:
            self._spool_ok = False
            logger.error("audit: spool unavailable (%s): records would be lost while the store is down", exc)
        self._orphan_backlog = await self._database.run(self._spool.orphan_backlog)
        if self._orphan_backlog:
            logger.warning(
                "audit: %d spooled records from an earlier run will be replayed", self._orphan_backlog
            )
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Write the queue within the shutdown bound, spool what is left, release the spool file."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self._shutdown_seconds)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                logger.warning(
                    "audit: shutdown bound (%.1f s) reached; spooling %d records",
                    self._shutdown_seconds,
                    len(self._queue) + len(self._in_flight),
                )
            except Exception:
                logger.exception("audit: writer task failed")
        # A batch whose write was cut short may or may not be stored: spool it (stored once either way).
        leftover = [*self._in_flight, *self._take(len(self._queue))]
        self._in_flight = []
        await self._spool_or_drop(leftover)
        await self._database.run(self._spool.close)
        logger.info(
            "audit writer stopped: written=%d spooled=%d dropped=%d backlog=%d",
            self.c.written,
            self.c.spooled,
            self.c.dropped,
            self.backlog(),
        )

    def counters(self) -> dict[str, int | bool]:
        self.c.queued = len(self._queue) + len(self._in_flight)
        self.c.backlog = self.backlog()
        return asdict(self.c)

    def backlog(self) -> int:
        return self._orphan_backlog + self._spool.own_backlog()

    async def flush(self) -> None:
        """Wait until the queue is empty and nothing is being written (tests; a clean shutdown)."""
        while self._queue or self._in_flight:
            self._wake.set()
            await asyncio.sleep(0.005)

    # -- the background task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._retry_due():
                if self._stopping:
                    return
                self._wake.clear()
                timeout = self._retry_seconds if self.backlog() or not self.c.store_available else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                continue
            if self._stopping and not self.c.store_available:
                return  # close() spools the rest at once
            try:
                await self._step()
            except Exception:
                logger.exception("audit: writer step failed; retrying")
                await asyncio.sleep(min(self._retry_seconds, 1.0))

    def _retry_due(self) -> bool:
        if self._stopping:
            return False
        pending = self.backlog() > 0 or not self.c.store_available
        return pending and self._clock() >= self._next_retry

    async def _step(self) -> None:
        if self._retry_due():
            await self._recover()
        batch = self._take(self._batch_size)
        if not batch:
            return
        self._in_flight = batch
        try:
            if self.c.store_available:
                try:
                    await self._database.run(self._write, batch)
                except SQLAlchemyError as exc:
                    self.store_down(exc)
                else:
                    return
            await self._spool_or_drop(batch)
        finally:
            self._in_flight = []

    async def _recover(self) -> None:
        """Try the store again: migrate (or, without CDS_MIGRATE_ON_START, connect), replay the spool."""
        try:
            await self._database.run(self._prepare)
            result = await self._database.run(self._spool.replay, self._replay_write, self._batch_size)
        except (SQLAlchemyError, OSError) as exc:
            self.store_down(exc)
            return
        if result.lost:
            self.c.lost += result.lost
            logger.error("audit: %d spooled records could not be read back and are lost", result.lost)
        if not self.c.store_available:
            logger.warning("audit store available again: %d spooled records replayed", result.written)
        elif result.written:
            logger.info("audit: %d spooled records replayed", result.written)
        self.c.store_available = True
        self._orphan_backlog = 0

    def _replay_write(self, batch: list[InvocationRecord]) -> None:
        """Called on a database thread by ``Spool.replay``."""
        self.c.replayed += self._write(batch)

    def _write(self, batch: list[InvocationRecord]) -> int:
        """Store a batch (on a database thread); returns how many records were accepted.

        A record the database refuses as invalid would otherwise block every later batch (and the
        spool) forever: the batch is retried record by record and the refused ones are counted and
        logged. Any other error (down, locked, schema missing) propagates: the store is down.
        """
        try:
            self._store.write_invocations(batch)
        except (IntegrityError, DataError):
            accepted = 0
            for record in batch:
                try:
                    self._store.write_invocations([record])
                    accepted += 1
                except (IntegrityError, DataError) as exc:
                    self.c.rejected += 1
                    logger.error("audit: the store refused record %s: %s", record.id, describe_error(exc))
            self.c.written += accepted
            return accepted
        self.c.written += len(batch)
        return len(batch)

    def store_down(self, exc: BaseException) -> None:
        """Mark the store down (retried every ``retry_seconds``), log at most once a minute."""
        self.c.failed += 1
        was_available = self.c.store_available
        self.c.store_available = False
        self._next_retry = self._clock() + self._retry_seconds
        message = "audit store unavailable (%s): records are spooled and retried every %g s (backlog=%d)"
        self._errors.error(
            "store", message, describe_error(exc), self._retry_seconds, self.backlog(), force=was_available
        )

    async def _spool_or_drop(self, batch: list[InvocationRecord]) -> None:
        if not batch:
            return
        if self._spool_ok:
            try:
                await self._database.run(self._spool.append, batch)
            except (SpoolFull, SpoolUnavailable) as exc:
                self._errors.error("spool", "audit: cannot spool (%s); records dropped", exc)
            else:
                self.c.spooled += len(batch)
                return
        else:
            self._errors.error("spool", "audit: no spool while the store is down; records dropped")
        self.c.dropped += len(batch)
        logger.debug("audit: %d records dropped (total %d)", len(batch), self.c.dropped)

    def _take(self, n: int) -> list[InvocationRecord]:
        batch: list[InvocationRecord] = []
        while self._queue and len(batch) < n:
            batch.append(self._queue.popleft())
        return batch


def _safe_instance(outcome: HookOutcome) -> str:
    try:
        return outcome.request.hookInstance[:128]
    except Exception:
        return "?"
