"""One hook call, end to end: service -> envelope and context -> prefetch -> engine -> cards -> audit.

Routes call ``Orchestrator.call`` and hold no logic of their own. Errors are domain exceptions mapped to
HTTP in ``api.errors``. One structured log line per call (service, hookInstance, prefetch keys supplied /
fetched / failed, card count, duration) and never a token, name, identifier or patient id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cds_service.cards import CardContext, IdFactory, build_cards, new_id
from cds_service.catalog import Catalog
from cds_service.config import Environment, Settings
from cds_service.definitions import Service
from cds_service.engine.dates import utc_today
from cds_service.engine.evaluate import DataNote, Evaluation
from cds_service.fhir.client import FhirClient
from cds_service.hookbody import decode_hook_body
from cds_service.hookcall import AuditSink, Caller, Clock, HookOutcome, NullAudit, utc_now
from cds_service.logs import correlation_id
from cds_service.metrics import Metrics
from cds_service.prefetch import PrefetchUnavailable, Resolved, fhir_access, resolve
from cds_service.schemas import (
    CdsResponse,
    HookRequest,
    OrderSelectContext,
    OrderSignContext,
    PatientViewContext,
    parse_input,
)

logger = logging.getLogger(__name__)

CONTEXT_MODELS: dict[str, type[PatientViewContext]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
}


class HookMismatch(ValueError):
    """The request's ``hook`` is not the hook this service answers."""


class Orchestrator:
    """Holds the long-lived collaborators (catalog, FHIR client, clock); no per-request state."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        fhir: FhirClient,
        *,
        clock: Clock = utc_now,
        id_factory: IdFactory = new_id,
        audit: AuditSink | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.engine = catalog.engine
        self.fhir = fhir
        self.clock = clock
        self.id_factory = id_factory
        self.audit: AuditSink = audit or NullAudit()
        self.metrics = metrics
        self._slots = asyncio.Semaphore(settings.max_concurrent_hook_calls)

    async def call(
        self,
        service_id: str,
        raw: bytes,
        caller: Caller,
        base_url: str,
        *,
        record: bool = True,
        fhir: bool = True,
    ) -> HookOutcome:
        """Answer one hook call (``raw``: the request body). Raises domain errors (malformed body, unknown
        service, bad envelope, 412). ``fhir=False``: evaluate only what the body holds (explain)."""
        body = decode_hook_body(raw, self.engine.normaliser.worth_reading)
        if not fhir:
            body.envelope.pop("fhirServer", None)
            body.envelope.pop("fhirAuthorization", None)
        service = self.catalog.service(service_id)
        request = parse_input(HookRequest, body.envelope)
        correlation_id.set(request.hookInstance)
        if request.hook != service.hook:
            raise HookMismatch(
                f"service {service.id!r} answers hook {service.hook!r}, not {request.hook[:64]!r}"
            )
        context = parse_context(service.hook, request.context)
        async with self._slots:
            started, t0 = self.clock(), time.perf_counter()
            outcome: HookOutcome | None = None
            try:
                access = fhir_access(
                    request,
                    allow_without_token=self.settings.fhir_without_token_allowed,
                    production=self.settings.env is Environment.production,
                    allowed_servers=caller.fhir_servers,
                )
                resolved = await resolve(
                    service,
                    body.prefetch or {},
                    request.context,
                    self.fhir,
                    access,
                    self.settings.fhir_time_budget_seconds,
                )
                evaluation = self._evaluate(service, context, resolved, started)
                failed = resolved.failed()
                notes = [
                    DataNote(f"Prefetch {key!r} could not be obtained: {problem}", key, True)
                    for key, problem in failed.items()
                ]
                cards = build_cards(
                    evaluation,
                    self.catalog.cards,
                    CardContext(context.patientId, base_url, notes, self.id_factory, _draft_codings(context)),
                )
                missing = {k: p for k, p in failed.items() if k in service.required}
                if missing and not (evaluation.hip_weakness and cards):
                    # What arrived cannot establish the entry criterion, or gives no card to carry the
                    # note: an empty answer must never stand for "could not check" (412).
                    raise PrefetchUnavailable(missing)
                outcome = HookOutcome(
                    service,
                    request,
                    context,
                    CdsResponse(cards=cards),
                    evaluation,
                    resolved,
                    started,
                    (time.perf_counter() - t0) * 1000,
                    caller,
                )
                return outcome
            finally:
                _log_call(service, request, outcome, (time.perf_counter() - t0) * 1000)
                if outcome is not None and record:
                    self.audit.submit(outcome)
                    self._count(outcome)

    def _count(self, outcome: HookOutcome) -> None:
        if self.metrics is None:
            return
        for card in outcome.response.cards:
            category = card.source.topic.code if card.source.topic else "none"
            self.metrics.cards.labels(category, card.indicator.value).inc()
        for key, result in outcome.prefetch.keys.items():
            self.metrics.prefetch_keys.labels(key, result.status).inc()

    def _evaluate(
        self, service: Service, context: PatientViewContext, resolved: Resolved, now: datetime
    ) -> Evaluation:
        resources = resolved.resources
        selections: frozenset[str] | None = None
        if isinstance(context, OrderSignContext):
            resources = [*resources, *_draft_resources(context.draftOrders)]
        if isinstance(context, OrderSelectContext):
            selections = frozenset(context.selections)
        return self.engine.evaluate(
            resources, context.patientId, utc_today(now), service.emit_pathways, selections
        )


def parse_context(hook: str, context: Mapping[str, Any]) -> PatientViewContext:
    return parse_input(CONTEXT_MODELS[hook], context, prefix="context")


def _draft_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, dict):
            out.append(resource)
    return out


def _draft_codings(context: PatientViewContext) -> list[list[dict[str, Any]]]:
    """Order hooks: the codings of every draft order (a card does not suggest what is already drafted)."""
    if not isinstance(context, OrderSignContext):
        return []
    out = []
    for resource in _draft_resources(context.draftOrders):
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, Mapping) else None
        if isinstance(codings, list):
            out.append([c for c in codings if isinstance(c, dict)])
    return out


def _log_call(service: Service, request: HookRequest, outcome: HookOutcome | None, ms: float) -> None:
    if outcome is None:
        logger.info(
            "hook call service=%s hookInstance=%s result=error duration_ms=%.1f",
            service.id,
            request.hookInstance,
            ms,
        )
        return
    p = outcome.prefetch
    logger.info(
        "hook call service=%s hookInstance=%s supplied=%s fetched=%s null=%s failed=%s cards=%d "
        "indicators=%s duration_ms=%.1f",
        service.id,
        request.hookInstance,
        ",".join(p.with_status("supplied")) or "-",
        ",".join(p.with_status("fetched")) or "-",
        ",".join(p.with_status("null")) or "-",
        ",".join(p.with_status("failed")) or "-",
        len(outcome.response.cards),
        ",".join(c.indicator.value for c in outcome.response.cards) or "-",
        ms,
    )


__all__ = ["HookMismatch", "Orchestrator", "parse_context"]
