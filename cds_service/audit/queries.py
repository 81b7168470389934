"""Reads of the audit tables for the audit API and reports: synchronous SQLAlchemy Core.

Callers run these methods on ``Database.run`` threads. ``AuditStore`` adds the writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, exists, func, select

from cds_service.audit.database import Database
from cds_service.audit.tables import cards, feedback, fired_rules, invocations
from cds_service.audit.views import (
    CardView,
    FeedbackView,
    InvocationDetail,
    InvocationPage,
    InvocationSummary,
    OtherCall,
    Trace,
)


@dataclass(frozen=True)
class InvocationFilter:
    """Every condition is optional; together they are AND-ed."""

    since: datetime | None = None
    until: datetime | None = None
    service: str | None = None
    rule: str | None = None  # the rule fired
    category: str | None = None  # a card of this category was returned
    indicator: str | None = None  # a card with this indicator (the same card, with category)
    patient_hash: str | None = None
    card: str | None = None  # the call that returned this card uuid
    client_iss: str | None = None


class AuditQueries:
    """Queries over the audit tables of one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def list_invocations(self, flt: InvocationFilter, limit: int, offset: int) -> InvocationPage:
        query = _filtered(select(*_summary_columns()), flt)
        query = (
            query.order_by(invocations.c.started_at.desc(), invocations.c.id).limit(limit + 1).offset(offset)
        )
        with self.database.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            more = len(rows) > limit
            rows = rows[:limit]
            fired, categories = self._fired_and_categories(conn, [r["id"] for r in rows])
        items = [_summary(r, fired.get(r["id"], []), categories.get(r["id"], [])) for r in rows]
        return InvocationPage(items=items, next_offset=offset + limit if more else None)

    def invocation(self, hook_instance: str, record_id: str | None = None) -> InvocationDetail | None:
        """The call with this hookInstance (the latest, or ``record_id``), with trace, cards and feedback."""
        columns = [
            *_summary_columns(),
            invocations.c.prefetch,
            invocations.c.prefetch_resources,
            invocations.c.unreadable_count,
            invocations.c.recorded_at,
            invocations.c.trace,
        ]
        with self.database.engine.connect() as conn:
            calls = conn.execute(
                select(invocations.c.id, invocations.c.started_at)
                .where(invocations.c.hook_instance == hook_instance)
                .order_by(invocations.c.started_at.desc(), invocations.c.id)
            ).all()
            chosen_id = next((c.id for c in calls if record_id in (None, c.id)), None)
            if chosen_id is None:
                return None
            chosen = dict(conn.execute(select(*columns).where(invocations.c.id == chosen_id)).one()._mapping)
            fired, categories = self._fired_and_categories(conn, [chosen["id"]])
            card_rows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(cards).where(cards.c.invocation_id == chosen["id"]).order_by(cards.c.position)
                )
            ]
            by_card = self._feedback_for(conn, [c["uuid"] for c in card_rows], chosen["service_id"])
        summary = _summary(chosen, fired.get(chosen["id"], []), categories.get(chosen["id"], []))
        return InvocationDetail(
            **summary.model_dump(),
            prefetch=chosen["prefetch"],
            prefetch_resources=chosen["prefetch_resources"] or {},
            unreadable_count=chosen["unreadable_count"],
            recorded_at=chosen["recorded_at"],
            trace=Trace.model_validate(chosen["trace"]),
            cards=[
                CardView(
                    position=c["position"],
                    uuid=c["uuid"],
                    category=c["category"],
                    indicator=c["indicator"],
                    summary=c["summary"],
                    rule_ids=c["rule_ids"],
                    suggestion_ids=c["suggestion_ids"],
                    feedback=by_card.get(c["uuid"], []),
                )
                for c in card_rows
            ],
            other_calls=[OtherCall(id=c.id, started_at=c.started_at) for c in calls if c.id != chosen_id],
        )

    def _fired_and_categories(
        self, conn: Connection, ids: Sequence[str]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        fired: dict[str, list[str]] = {}
        categories: dict[str, list[str]] = {}
        if not ids:
            return fired, categories
        for inv, rule in conn.execute(
            select(fired_rules.c.invocation_id, fired_rules.c.rule_id)
            .where(fired_rules.c.invocation_id.in_(ids))
            .order_by(fired_rules.c.rule_id)
        ):
            fired.setdefault(inv, []).append(rule)
        for inv, category in conn.execute(
            select(cards.c.invocation_id, cards.c.category)
            .where(cards.c.invocation_id.in_(ids))
            .order_by(cards.c.position)
        ):
            categories.setdefault(inv, []).append(category)
        return fired, categories

    @staticmethod
    def _feedback_for(
        conn: Connection, card_ids: Sequence[str], service_id: str
    ) -> dict[str, list[FeedbackView]]:
        out: dict[str, list[FeedbackView]] = {}
        if not card_ids:
            return out
        query = (
            select(feedback)
            .where(feedback.c.card_uuid.in_(card_ids), feedback.c.service_id == service_id)
            .order_by(feedback.c.outcome_at)
        )
        for row in conn.execute(query):
            out.setdefault(row.card_uuid, []).append(feedback_view(row._mapping))
        return out

    def feedback_rows(self, since: datetime | None, until: datetime | None, service: str | None) -> list[Any]:
        """Feedback joined to its card and call, for calls in the period (statistics)."""
        query = (
            select(
                cards.c.uuid,
                cards.c.category,
                cards.c.rule_ids,
                feedback.c.outcome,
                feedback.c.reason_system,
                feedback.c.reason_code,
                feedback.c.reason_display,
                feedback.c.has_comment,
            )
            .select_from(feedback.join(cards, cards.c.uuid == feedback.c.card_uuid))
            .join(invocations, invocations.c.id == cards.c.invocation_id)
            .where(invocations.c.service_id == feedback.c.service_id)
        )
        query = query.where(*_period(invocations.c.started_at, since, until))
        if service:
            query = query.where(invocations.c.service_id == service)
        with self.database.engine.connect() as conn:
            return list(conn.execute(query))

    def counts(self, since: datetime | None, until: datetime | None, service: str | None) -> dict[str, Any]:
        """Aggregates for the statistics: calls, firings per rule, cards per category and indicator."""
        period = _period(invocations.c.started_at, since, until)
        by_service = [invocations.c.service_id == service] if service else []
        with self.database.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(invocations).where(*period, *by_service))
            fired = conn.execute(
                select(
                    fired_rules.c.rule_id,
                    fired_rules.c.rule_version,
                    fired_rules.c.pathway,
                    func.count().label("n"),
                )
                .join(invocations, invocations.c.id == fired_rules.c.invocation_id)
                .where(*period, *by_service)
                .group_by(fired_rules.c.rule_id, fired_rules.c.rule_version, fired_rules.c.pathway)
            ).all()
            shown = conn.execute(
                select(cards.c.category, cards.c.indicator, func.count().label("n"))
                .join(invocations, invocations.c.id == cards.c.invocation_id)
                .where(*period, *by_service)
                .group_by(cards.c.category, cards.c.indicator)
            ).all()
            # cards shown per rule: rule_ids is JSON, so counted in Python over the period's cards
            rule_cards = conn.execute(
                select(cards.c.rule_ids)
                .join(invocations, invocations.c.id == cards.c.invocation_id)
                .where(*period, *by_service)
            ).all()
            fb_period = _period(feedback.c.outcome_at, since, until)
            fb_service = [feedback.c.service_id == service] if service else []
            without_card = conn.scalar(
                select(func.count())
                .select_from(feedback)
                .where(feedback.c.card_uuid.is_(None), *fb_period, *fb_service)
            )
            unmatched = conn.scalar(
                select(func.count())
                .select_from(feedback)
                .where(
                    feedback.c.card_uuid.is_not(None),
                    ~exists().where(cards.c.uuid == feedback.c.card_uuid),
                    *fb_period,
                    *fb_service,
                )
            )
        return {
            "invocations": total or 0,
            "fired": fired,
            "shown": shown,
            "rule_cards": [r.rule_ids for r in rule_cards],
            "feedback_without_card": without_card or 0,
            "feedback_unmatched": unmatched or 0,
        }


def feedback_view(row: Any) -> FeedbackView:
    fields = {k: row[k] for k in FeedbackView.model_fields if k != "card"}
    return FeedbackView(card=row["card_uuid"], **fields)


def _summary_columns() -> list[Any]:
    c = invocations.c
    return [
        c.id,
        c.hook_instance,
        c.service_id,
        c.hook,
        c.started_at,
        c.duration_ms,
        c.client_iss,
        c.client_tenant,
        c.patient_hash,
        c.rules_version,
        c.hip_weakness,
        c.red_flag,
        c.card_count,
        c.highest_indicator,
    ]


def _summary(row: dict[str, Any], fired: list[str], categories: list[str]) -> InvocationSummary:
    return InvocationSummary(
        **{k: row[k] for k in InvocationSummary.model_fields if k in row},
        fired_rules=fired,
        categories=categories,
    )


def _period(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def _filtered(query: Select[Any], flt: InvocationFilter) -> Select[Any]:
    c = invocations.c
    conditions: list[Any] = _period(c.started_at, flt.since, flt.until)
    if flt.service:
        conditions.append(c.service_id == flt.service)
    if flt.patient_hash:
        conditions.append(c.patient_hash == flt.patient_hash)
    if flt.client_iss:
        conditions.append(c.client_iss == flt.client_iss)
    if flt.rule:
        conditions.append(
            exists().where(fired_rules.c.invocation_id == c.id, fired_rules.c.rule_id == flt.rule)
        )
    card_conditions: list[Any] = []
    if flt.category:
        card_conditions.append(cards.c.category == flt.category)
    if flt.indicator:
        card_conditions.append(cards.c.indicator == flt.indicator)
    if flt.card:
        card_conditions.append(cards.c.uuid == flt.card)
    if card_conditions:
        conditions.append(exists().where(cards.c.invocation_id == c.id, and_(*card_conditions)))
    return query.where(*conditions)
