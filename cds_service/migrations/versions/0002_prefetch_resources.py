"""Per prefetch key, how many resources the EHR supplied and how many the service fetched.

A key the EHR started and the service finished (``link[next]`` pages) is recorded as "paged", and its
resources split between supplied and fetched: a reviewer sees exactly what the service read itself.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("audit_invocations") as table:
        table.alter_column(
            "prefetch",
            existing_type=JSON,
            existing_nullable=False,
            comment="Prefetch key -> supplied|fetched|paged|null|failed.",
            existing_comment="Prefetch key -> supplied|fetched|null|failed.",
        )
    op.add_column(
        "audit_invocations",
        sa.Column(
            "prefetch_resources",
            JSON,
            nullable=True,
            comment="Prefetch key -> resources the EHR supplied and the service fetched (revision 0002).",
        ),
    )


def downgrade() -> None:
    op.drop_column("audit_invocations", "prefetch_resources")
    with op.batch_alter_table("audit_invocations") as table:
        table.alter_column(
            "prefetch",
            existing_type=JSON,
            existing_nullable=False,
            comment="Prefetch key -> supplied|fetched|null|failed.",
            existing_comment="Prefetch key -> supplied|fetched|paged|null|failed.",
        )
