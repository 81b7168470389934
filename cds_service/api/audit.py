"""``GET /audit/...``: the audit trail for clinical safety reviewers (audit token required).

Every hook call is listed with the rules that fired and the cards returned; one call in full shows every
rule's evaluation and the feedback on each card; statistics give, per rule and category, how often it
fired and what clinicians did. The patient filter takes the id as the EHR knows it and hashes it here
with the service's key: the id is never stored, logged or echoed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query

from cds_service.api.deps import AuditAccess, StateDep
from cds_service.api.openapi_docs import error_response
from cds_service.audit.examples import DETAIL_EXAMPLE, PAGE_EXAMPLE, STATS_EXAMPLE
from cds_service.audit.queries import InvocationFilter
from cds_service.audit.views import InvocationDetail, InvocationPage, StatsResponse
from cds_service.engine.dates import as_utc

router = APIRouter(prefix="/audit", tags=["Audit"], dependencies=[AuditAccess])

Since = Annotated[
    datetime | None,
    Query(
        description="Calls at or after this time (ISO 8601; without zone: UTC).",
        examples=["2026-01-01T00:00:00Z"],
    ),
]
Until = Annotated[datetime | None, Query(description="Calls before this time (ISO 8601; without zone: UTC).")]
Service = Annotated[str | None, Query(description="Service id, e.g. hip-weakness.", max_length=64)]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_response("Missing or wrong audit token (click Authorize)."),
    503: error_response("The audit store is unavailable; retry after `Retry-After`."),
}


@router.get(
    "/invocations",
    response_model=InvocationPage,
    summary="Hook calls, newest first, filtered",
    operation_id="list_invocations",
    responses={200: {"content": {"application/json": {"example": PAGE_EXAMPLE}}}, **ERRORS},
)
async def list_invocations(
    state: StateDep,
    since: Since = None,
    until: Until = None,
    service: Service = None,
    rule: Annotated[
        str | None, Query(description="Only calls in which this rule fired, e.g. RF-CES.", max_length=64)
    ] = None,
    category: Annotated[
        str | None,
        Query(
            description="Only calls that returned a card of this category, e.g. urgent-referral.",
            max_length=64,
        ),
    ] = None,
    indicator: Annotated[
        Literal["info", "warning", "critical"] | None,
        Query(
            description="Only calls that returned a card with this indicator (with category: the same card)."
        ),
    ] = None,
    patient: Annotated[
        str | None,
        Query(
            description="The patient id as the EHR knows it (context.patientId). Hashed here with the "
            "service's key and matched against the stored pseudonym; never stored or logged.",
            max_length=64,
        ),
    ] = None,
    card: Annotated[
        str | None, Query(description="The call that returned this card uuid.", max_length=128)
    ] = None,
    client: Annotated[str | None, Query(description="CDS client (JWT iss).", max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="From `next_offset` of the previous page.")
    ] = 0,
) -> InvocationPage:
    """One line per answered hook call: when, which service and client, the patient's pseudonym, the rules
    that fired and the categories of the cards returned. Open one with
    `GET /audit/invocations/{hookInstance}`.
    """
    flt = InvocationFilter(
        since=_utc(since),
        until=_utc(until),
        service=service,
        rule=rule,
        category=category,
        indicator=indicator,
        patient_hash=state.audit.patient_hash(patient) if patient else None,
        card=card,
        client_iss=client,
    )
    return await state.audit.invocations(flt, limit, offset)


@router.get(
    "/invocations/{hook_instance}",
    response_model=InvocationDetail,
    summary="One hook call in full: every rule's evaluation, the cards, and the feedback on them",
    operation_id="get_invocation",
    responses={
        200: {"content": {"application/json": {"example": DETAIL_EXAMPLE}}},
        404: error_response("No call with this hookInstance in the audit trail."),
        **ERRORS,
    },
)
async def get_invocation(
    state: StateDep,
    hook_instance: Annotated[str, Path(description="The hookInstance the EHR sent.", max_length=128)],
    call: Annotated[
        str | None,
        Query(
            description="A record id from `other_calls`, when the EHR sent this hookInstance more than once."
        ),
    ] = None,
) -> InvocationDetail:
    """Why each card was shown: `trace.rules` lists every rule evaluated, with its version, whether it
    fired, the facts it fired on (resource type, id, code, date) and each condition's result;
    `trace.unreadable` lists what the engine could not read. Under `cards`, each card's rules and the
    feedback clinicians sent (accepted suggestions, override reasons). Rules: `GET /rules/{id}`.
    """
    detail = await state.audit.invocation(hook_instance, call)
    if detail is None:
        raise HTTPException(404, "No call with this hookInstance in the audit trail")
    return detail


@router.get(
    "/stats",
    response_model=StatsResponse,
    summary="Per rule and category: how often it fired, accepted, overridden, and why",
    operation_id="audit_stats",
    responses={200: {"content": {"application/json": {"example": STATS_EXAMPLE}}}, **ERRORS},
)
async def audit_stats(
    state: StateDep, since: Since = None, until: Until = None, service: Service = None
) -> StatsResponse:
    """For the calls in the period: per rule, the calls it fired in, the cards it contributed to and how
    many of them were accepted or overridden (distinct cards), with the override reasons; the same per
    card category. Rules that never fired are listed with zeros.
    """
    return await state.audit.stats(_utc(since), _utc(until), service)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(value)
    except ValueError as exc:
        raise HTTPException(400, f"since/until: {exc}") from None
