"""Audit trail, feedback and JWT replay tables.

Revision ID: 0001
Revises:
Create Date: 2026-01-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_invocations",
        sa.Column(
            "id", sa.String(36), nullable=False, comment="Record id, assigned when the call was answered."
        ),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("started_at", utc(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column(
            "client_iss", sa.String(512), nullable=True, comment="JWT iss of the CDS client (None: auth off)."
        ),
        sa.Column("client_tenant", sa.String(256), nullable=True),
        sa.Column("patient_hash", sa.String(64), nullable=True, comment="HMAC-SHA256 of context.patientId."),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("prefetch", JSON, nullable=False, comment="Prefetch key -> supplied|fetched|null|failed."),
        sa.Column("hip_weakness", sa.Boolean(), nullable=False),
        sa.Column("red_flag", sa.Boolean(), nullable=False),
        sa.Column("card_count", sa.Integer(), nullable=False),
        sa.Column("highest_indicator", sa.String(16), nullable=True),
        sa.Column("unreadable_count", sa.Integer(), nullable=False),
        sa.Column("trace", JSON, nullable=False, comment="Evaluation trace without free text."),
        sa.Column("recorded_at", utc(), nullable=False, comment="When the record reached the store."),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_invocations")),
    )
    op.create_index(op.f("ix_audit_invocations_started_at"), "audit_invocations", ["started_at"])
    op.create_index(op.f("ix_audit_invocations_hook_instance"), "audit_invocations", ["hook_instance"])
    op.create_index(
        op.f("ix_audit_invocations_service_id_started_at"), "audit_invocations", ["service_id", "started_at"]
    )
    op.create_index(
        op.f("ix_audit_invocations_patient_hash_started_at"),
        "audit_invocations",
        ["patient_hash", "started_at"],
    )

    op.create_table(
        "audit_fired_rules",
        sa.Column("invocation_id", sa.String(36), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.Column("pathway", sa.String(32), nullable=False),
        sa.Column("started_at", utc(), nullable=False, comment="Copy of the call's time, for range stats."),
        sa.ForeignKeyConstraint(
            ["invocation_id"],
            ["audit_invocations.id"],
            name=op.f("fk_audit_fired_rules_invocation_id_audit_invocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invocation_id", "rule_id", name=op.f("pk_audit_fired_rules")),
    )
    op.create_index(
        op.f("ix_audit_fired_rules_rule_id_started_at"), "audit_fired_rules", ["rule_id", "started_at"]
    )

    op.create_table(
        "audit_cards",
        sa.Column("invocation_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(128), nullable=False),
        sa.Column("category", sa.String(64), nullable=False, comment="source.topic.code"),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("summary", sa.String(200), nullable=False),
        sa.Column("rule_ids", JSON, nullable=False, comment="Rules that produced this card."),
        sa.Column("suggestion_ids", JSON, nullable=False),
        sa.Column("started_at", utc(), nullable=False, comment="Copy of the call's time, for range stats."),
        sa.ForeignKeyConstraint(
            ["invocation_id"],
            ["audit_invocations.id"],
            name=op.f("fk_audit_cards_invocation_id_audit_invocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invocation_id", "position", name=op.f("pk_audit_cards")),
    )
    op.create_index(op.f("ix_audit_cards_uuid"), "audit_cards", ["uuid"])
    op.create_index(op.f("ix_audit_cards_category_started_at"), "audit_cards", ["category", "started_at"])

    op.create_table(
        "audit_feedback",
        sa.Column(
            "id", sa.String(64), nullable=False, comment="Idempotency key (hash of the entry's identity)."
        ),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column(
            "card_uuid", sa.String(128), nullable=True, comment="None: the client sent no card id (sandbox)."
        ),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_at", utc(), nullable=False),
        sa.Column("accepted_suggestions", JSON, nullable=False),
        sa.Column("reason_system", sa.String(512), nullable=True),
        sa.Column("reason_code", sa.String(256), nullable=True),
        sa.Column("reason_display", sa.String(512), nullable=True),
        sa.Column(
            "reasons", JSON, nullable=False, comment="Every override reason sent (Epic may send several)."
        ),
        sa.Column("has_comment", sa.Boolean(), nullable=False),
        sa.Column(
            "user_comment", sa.Text(), nullable=True, comment="Only with CDS_AUDIT_STORE_USER_COMMENTS=true."
        ),
        sa.Column("client_iss", sa.String(512), nullable=True),
        sa.Column("client_tenant", sa.String(256), nullable=True),
        sa.Column("received_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_feedback")),
    )
    op.create_index(op.f("ix_audit_feedback_card_uuid"), "audit_feedback", ["card_uuid"])
    op.create_index(op.f("ix_audit_feedback_outcome_at"), "audit_feedback", ["outcome_at"])

    op.create_table(
        "jwt_replay",
        sa.Column("key", sa.String(64), nullable=False, comment="SHA-256 of iss and jti."),
        sa.Column(
            "expires_at", sa.Float(), nullable=False, comment="Unix time after which the entry is forgotten."
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_jwt_replay")),
    )
    op.create_index(op.f("ix_jwt_replay_expires_at"), "jwt_replay", ["expires_at"])


def downgrade() -> None:
    op.drop_table("jwt_replay")
    op.drop_table("audit_feedback")
    op.drop_table("audit_cards")
    op.drop_table("audit_fired_rules")
    op.drop_table("audit_invocations")
