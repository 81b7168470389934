"""Writes of the audit tables (reads in ``queries``): synchronous SQLAlchemy Core, one transaction per call.

Callers run these methods on ``Database.run`` threads. Writes are idempotent: invocation records carry
their own id (a replayed spool skips ids already stored) and feedback rows are keyed by their identity
(``INSERT ... ON CONFLICT DO NOTHING``). A failed transaction leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from cds_service.audit.database import Database
from cds_service.audit.feedback import FeedbackEntry
from cds_service.audit.queries import AuditQueries
from cds_service.audit.records import InvocationRecord
from cds_service.audit.tables import cards, feedback, fired_rules, invocations


def insert_ignoring_duplicates(connection: Connection, table: Any) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database {connection.dialect.name}")


class AuditStore(AuditQueries):
    """The audit tables of one database: the queries, and the writes."""

    def __init__(self, database: Database, clock: Any = None) -> None:
        super().__init__(database)
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- writes ----------------------------------------------------------------------------------------

    def write_invocations(self, records: Sequence[InvocationRecord]) -> int:
        """Store the records not yet stored; returns how many were new."""
        if not records:
            return 0
        unique = list({r.id: r for r in records}.values())
        now = self._clock()
        with self.database.engine.begin() as conn:
            known = set(
                conn.scalars(select(invocations.c.id).where(invocations.c.id.in_([r.id for r in unique])))
            )
            new = [r for r in unique if r.id not in known]
            if not new:
                return 0
            conn.execute(invocations.insert(), [_invocation_row(r, now) for r in new])
            fired = [
                {
                    "invocation_id": r.id,
                    "rule_id": f.rule_id,
                    "rule_version": f.rule_version,
                    "pathway": f.pathway,
                    "started_at": r.started_at,
                }
                for r in new
                for f in {f.rule_id: f for f in r.fired}.values()
            ]
            if fired:
                conn.execute(fired_rules.insert(), fired)
            card_rows = [
                {
                    "invocation_id": r.id,
                    "position": c.position,
                    "uuid": c.uuid[:128],
                    "category": c.category[:64],
                    "indicator": c.indicator,
                    "summary": c.summary[:200],
                    "rule_ids": c.rule_ids,
                    "suggestion_ids": c.suggestion_ids,
                    "started_at": r.started_at,
                }
                for r in new
                for c in r.cards
            ]
            if card_rows:
                conn.execute(cards.insert(), card_rows)
        return len(new)

    def write_feedback(self, entries: Sequence[FeedbackEntry]) -> tuple[int, int]:
        """Store feedback atomically; returns (new, already stored). Raises on any database error."""
        if not entries:
            return 0, 0
        rows = [e.row() for e in entries]
        with self.database.engine.begin() as conn:
            known = set(conn.scalars(select(feedback.c.id).where(feedback.c.id.in_([r["id"] for r in rows]))))
            fresh = [r for r in rows if r["id"] not in known]
            if fresh:
                conn.execute(insert_ignoring_duplicates(conn, feedback), fresh)
        return len(fresh), len(rows) - len(fresh)


def _invocation_row(record: InvocationRecord, recorded_at: datetime) -> dict[str, Any]:
    return {
        "id": record.id,
        "hook_instance": record.hook_instance,
        "service_id": record.service_id,
        "hook": record.hook,
        "started_at": record.started_at,
        "duration_ms": record.duration_ms,
        "client_iss": record.client_iss,
        "client_tenant": record.client_tenant,
        "patient_hash": record.patient_hash,
        "rules_version": record.rules_version,
        "prefetch": record.prefetch,
        "prefetch_resources": record.prefetch_resources,
        "hip_weakness": record.hip_weakness,
        "red_flag": record.red_flag,
        "card_count": len(record.cards),
        "highest_indicator": record.highest_indicator,
        "unreadable_count": record.unreadable_count,
        "trace": record.trace,
        "recorded_at": recorded_at,
    }
