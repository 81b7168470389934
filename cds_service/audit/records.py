"""What is recorded for one hook call, built from the ``HookOutcome`` the moment the call is answered.

The record is small and self-contained (no reference to the request, whose prefetch can be megabytes),
so it can wait in the writer's queue, be spooled to disk as one JSON line, and be written later. Its
``id`` is assigned here, once: writing the same record twice (a spool replayed after a crash mid-write)
stores it once.

What it holds, and what it never holds:
- the patient as ``PatientPseudonym(context.patientId)``, never the id;
- the CDS client's ``iss`` and ``tenant``, never the JWT or the ``fhirAuthorization`` token;
- prefetch keys with how each was obtained, never the data or the fetch error text (it can contain URLs
  with the patient id);
- the evaluation trace without free text (``include_text=False``: resource type, id, code, date, value);
- each card's uuid, category, indicator, summary (rule text, no patient data), rules and suggestion uuids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from cds_service.audit.pseudonym import PatientPseudonym
from cds_service.hookcall import HookOutcome
from cds_service.schemas import Card
from cds_service.trace import evaluation_trace

SPOOL_FORMAT = 1


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class FiredRule(Frozen):
    rule_id: str
    rule_version: str
    pathway: str


class CardRecord(Frozen):
    position: int
    uuid: str
    category: str
    indicator: str
    summary: str
    rule_ids: list[str]
    suggestion_ids: list[str]


class InvocationRecord(Frozen):
    """One answered hook call, as stored (and as spooled, one JSON line each)."""

    format: int = SPOOL_FORMAT
    id: str
    hook_instance: str
    service_id: str
    hook: str
    started_at: datetime
    duration_ms: float
    client_iss: str | None
    client_tenant: str | None
    patient_hash: str | None
    rules_version: str
    prefetch: dict[str, str]
    prefetch_resources: dict[str, dict[str, int]] = Field(default_factory=dict)
    hip_weakness: bool
    red_flag: bool
    highest_indicator: str | None
    unreadable_count: int
    trace: dict[str, Any]
    fired: list[FiredRule] = Field(default_factory=list)
    cards: list[CardRecord] = Field(default_factory=list)


def build_record(outcome: HookOutcome, pseudonym: PatientPseudonym, rules_version: str) -> InvocationRecord:
    evaluation = outcome.evaluation
    rules_by_category = {
        code: [r.rule.id for r in results] for code, results in evaluation.categories.items()
    }
    cards = [_card(i, card, rules_by_category) for i, card in enumerate(outcome.response.cards)]
    highest = max(outcome.response.cards, key=lambda c: c.indicator.rank, default=None)
    return InvocationRecord(
        id=str(uuid4()),
        hook_instance=outcome.request.hookInstance,
        service_id=outcome.service.id,
        hook=outcome.service.hook,
        started_at=outcome.started,
        duration_ms=round(outcome.duration_ms, 3),
        client_iss=_clip(outcome.caller.iss, 512),
        client_tenant=_clip(outcome.caller.tenant, 256),
        patient_hash=pseudonym(outcome.context.patientId) if outcome.context.patientId else None,
        rules_version=rules_version,
        prefetch={key: result.status for key, result in outcome.prefetch.keys.items()},
        prefetch_resources={
            key: {"supplied": result.supplied, "fetched": result.fetched}
            for key, result in outcome.prefetch.keys.items()
        },
        hip_weakness=evaluation.hip_weakness,
        red_flag=evaluation.red_flag,
        highest_indicator=highest.indicator.value if highest else None,
        unreadable_count=len(evaluation.unreadable),
        trace=evaluation_trace(evaluation, rules_version, include_text=False, compact=True),
        fired=[
            FiredRule(rule_id=r.rule.id, rule_version=r.rule.spec.version, pathway=r.rule.spec.pathway)
            for r in evaluation.results
            if r.fired
        ],
        cards=cards,
    )


def _card(position: int, card: Card, rules_by_category: dict[str, list[str]]) -> CardRecord:
    category = card.source.topic.code if card.source.topic else "uncategorised"
    return CardRecord(
        position=position,
        uuid=card.uuid,
        category=category,
        indicator=card.indicator.value,
        summary=card.summary,
        rule_ids=rules_by_category.get(category, []),
        suggestion_ids=[s.uuid for s in card.suggestions or []],
    )


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None
