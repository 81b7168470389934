"""The audit schema as SQLAlchemy Core tables: the one description Alembic migrations are checked against.

Tables (all prefixed ``audit_`` except the JWT replay table):

- ``audit_invocations``: one row per answered hook call. No patient id (``patient_hash`` is an HMAC), no
  token, no free text; ``trace`` is ``trace.evaluation_trace(..., include_text=False)``.
- ``audit_fired_rules``: the rules that fired in a call (the full list, fired or not, is in ``trace``);
  a table so that "which calls did rule X fire in" and the per-rule statistics are indexed queries.
- ``audit_cards``: the cards returned (uuid, category, indicator, summary, the rules behind each card and
  its suggestion uuids), so that feedback, which names only a card uuid, finds its call.
- ``audit_feedback``: one row per distinct feedback entry; the primary key is the idempotency key, so a
  repeated entry is stored once. It is linked to its card (and so its call) by ``card_uuid`` at read time:
  feedback can arrive before the call's record is written (the record waits in the writer's queue or spool).
- ``jwt_replay``: seen ``(iss, jti)`` pairs, hashed, until the token expires (cross-worker replay check).

Timestamps are UTC. SQLite keeps no time zone, so ``UtcDateTime`` stores naive UTC there and gives back
aware datetimes everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (naive UTC in SQLite, ``timestamptz`` in PostgreSQL)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json: Any = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

invocations = Table(
    "audit_invocations",
    metadata,
    Column("id", String(36), primary_key=True, comment="Record id, assigned when the call was answered."),
    Column("hook_instance", String(128), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("client_iss", String(512), nullable=True, comment="JWT iss of the CDS client (None: auth off)."),
    Column("client_tenant", String(256), nullable=True),
    Column("patient_hash", String(64), nullable=True, comment="HMAC-SHA256 of context.patientId."),
    Column("rules_version", String(64), nullable=False),
    Column("prefetch", Json, nullable=False, comment="Prefetch key -> supplied|fetched|paged|null|failed."),
    Column(
        "prefetch_resources",
        Json,
        nullable=True,
        comment="Prefetch key -> resources the EHR supplied and the service fetched (revision 0002).",
    ),
    Column("hip_weakness", Boolean, nullable=False),
    Column("red_flag", Boolean, nullable=False),
    Column("card_count", Integer, nullable=False),
    Column("highest_indicator", String(16), nullable=True),
    Column("unreadable_count", Integer, nullable=False),
    Column("trace", Json, nullable=False, comment="Evaluation trace without free text."),
    Column("recorded_at", UtcDateTime(), nullable=False, comment="When the record reached the store."),
    Index(None, "started_at"),
    Index(None, "hook_instance"),
    Index(None, "service_id", "started_at"),
    Index(None, "patient_hash", "started_at"),
)

fired_rules = Table(
    "audit_fired_rules",
    metadata,
    Column(
        "invocation_id",
        String(36),
        ForeignKey("audit_invocations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("rule_id", String(64), primary_key=True),
    Column("rule_version", String(32), nullable=False),
    Column("pathway", String(32), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False, comment="Copy of the call's time, for range stats."),
    Index(None, "rule_id", "started_at"),
)

cards = Table(
    "audit_cards",
    metadata,
    Column(
        "invocation_id",
        String(36),
        ForeignKey("audit_invocations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("uuid", String(128), nullable=False),
    Column("category", String(64), nullable=False, comment="source.topic.code"),
    Column("indicator", String(16), nullable=False),
    Column("summary", String(200), nullable=False),
    Column("rule_ids", Json, nullable=False, comment="Rules that produced this card."),
    Column("suggestion_ids", Json, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False, comment="Copy of the call's time, for range stats."),
    Index(None, "uuid"),
    Index(None, "category", "started_at"),
)

feedback = Table(
    "audit_feedback",
    metadata,
    Column("id", String(64), primary_key=True, comment="Idempotency key (hash of the entry's identity)."),
    Column("service_id", String(64), nullable=False),
    Column("card_uuid", String(128), nullable=True, comment="None: the client sent no card id (sandbox)."),
    Column("outcome", String(16), nullable=False),
    Column("outcome_at", UtcDateTime(), nullable=False),
    Column("accepted_suggestions", Json, nullable=False),
    Column("reason_system", String(512), nullable=True),
    Column("reason_code", String(256), nullable=True),
    Column("reason_display", String(512), nullable=True),
    Column("reasons", Json, nullable=False, comment="Every override reason sent (Epic may send several)."),
    Column("has_comment", Boolean, nullable=False),
    Column("user_comment", Text, nullable=True, comment="Only with CDS_AUDIT_STORE_USER_COMMENTS=true."),
    Column("client_iss", String(512), nullable=True),
    Column("client_tenant", String(256), nullable=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Index(None, "card_uuid"),
    Index(None, "outcome_at"),
)

jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("key", String(64), primary_key=True, comment="SHA-256 of iss and jti."),
    Column("expires_at", Float, nullable=False, comment="Unix time after which the entry is forgotten."),
    Index(None, "expires_at"),
)
