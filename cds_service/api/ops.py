"""Operator endpoints: liveness, readiness and Prometheus metrics. No EHR authentication, never audited,
never patient data (only statuses, versions and counts)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from cds_service.api.deps import StateDep
from cds_service.api.errors import Unauthorized, outcome
from cds_service.api.openapi_docs import error_response
from cds_service.config import Settings

router = APIRouter(tags=["Operations"])
READY_DB_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    rules_version: str
    settings_fingerprint: str


def settings_fingerprint(settings: Settings) -> str:
    """A short hash of the non-secret, not instance-local settings: instances behind one load balancer
    should agree (secrets and the local data directory are left out)."""
    public = settings.model_dump(
        mode="json", exclude={"audit_token", "patient_hash_secret", "metrics_token", "data_dir"}
    )
    return hashlib.sha256(repr(sorted(public.items())).encode()).hexdigest()[:12]


@router.get(
    "/healthz", response_model=Health, summary="Liveness: the process answers", operation_id="healthz"
)
async def healthz() -> Health:
    """200 as long as the process can answer HTTP."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: rules loaded, database reachable, audit backlog below its limit",
    operation_id="readyz",
    responses={503: {"description": "Not ready: an OperationOutcome names each failing check."}},
)
async def readyz(state: StateDep) -> Any:
    """200 when this instance should receive traffic. Also reports the rules version and a fingerprint
    of the settings, so operators can confirm every instance runs the same rules and configuration."""
    checks: dict[str, str] = {"rules": f"{len(state.catalog.rules)} rules loaded"}
    problems: list[str] = []
    try:
        database = state.audit.database
        await asyncio.wait_for(database.run(database.ping), READY_DB_TIMEOUT_SECONDS)
        checks["database"] = "reachable"
    except Exception:  # any failure means not ready; the audit layer logs the cause
        checks["database"] = "unreachable"
        problems.append("database: unreachable")
    backlog = int(state.audit.writer.counters().get("backlog", 0))
    checks["audit_backlog"] = str(backlog)
    if backlog > state.settings.ready_max_audit_backlog:
        problems.append(f"audit backlog {backlog} above {state.settings.ready_max_audit_backlog}")
    if problems:
        return outcome(503, "transient", "Not ready: " + "; ".join(problems), headers={"Retry-After": "5"})
    return Readiness(
        status="ready",
        checks=checks,
        rules_version=state.catalog.version,
        settings_fingerprint=settings_fingerprint(state.settings),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (summed over workers)",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition."},
        401: error_response("CDS_METRICS_TOKEN is set and was not sent."),
    },
)
async def metrics(request: Request, state: StateDep) -> Response:
    """Hook calls, latency, cards, prefetch, FHIR calls, 412s, authentication failures, audit trail and
    feedback. Protected by ``CDS_METRICS_TOKEN`` when it is set."""
    expected = state.settings.metrics_token
    if expected is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected.get_secret_value()}".encode()):
            raise Unauthorized("the bearer token is not the metrics token" if given else None)
    state.metrics.record_audit(state.audit.counters())
    body, content_type = state.metrics.exposition()
    return Response(body, media_type=content_type)
