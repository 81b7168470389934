"""The types of one hook call, shared by the orchestrator that makes them and the audit trail and API
that read them: who called (``Caller``), what was answered (``HookOutcome``), where it is recorded
(``AuditSink``) and the clock. A module of its own so that nothing below the orchestrator imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cds_service.definitions import Service
from cds_service.engine.evaluate import Evaluation
from cds_service.prefetch import Resolved
from cds_service.schemas import CdsResponse, HookRequest, PatientViewContext

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Caller:
    """Who called: the verified CDS client (None when authentication is off)."""

    iss: str | None = None
    tenant: str | None = None
    fhir_servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class HookOutcome:
    service: Service
    request: HookRequest
    context: PatientViewContext
    response: CdsResponse
    evaluation: Evaluation
    prefetch: Resolved
    started: datetime
    duration_ms: float
    caller: Caller


class AuditSink(Protocol):
    """Receives every answered hook call; must return immediately (writes happen off the request path)."""

    def submit(self, outcome: HookOutcome) -> None: ...


class NullAudit:
    def submit(self, outcome: HookOutcome) -> None:
        return None
