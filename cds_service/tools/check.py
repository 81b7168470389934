"""``cds-service check``: make the hook call an EHR would make for one patient and show the cards.

Steps, each shown as progress on stderr: discovery (the service's prefetch templates), ``Patient/<id>``
on the FHIR server (proves the URL, the token and the id), the prefetch queries (or none with
``--no-prefetch``: the service then fetches everything itself with the same token), the hook call.
Expected failures end with the server's own words and exit status 1, never a traceback: a FHIR error
prints its OperationOutcome diagnostics, a non-200 from the service prints its OperationOutcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cds_service.fhir.client import FhirClient
from cds_service.fhir.errors import FhirError, FhirNotFound
from cds_service.fhir.outcomes import outcome_text
from cds_service.tools import cards_view
from cds_service.tools.console import Console
from cds_service.tools.ehr import FhirTarget, hook_context, hook_request, read_patient, resolve_prefetch
from cds_service.tools.service_call import ServiceSession, ServiceUnavailable, open_service

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOptions:
    fhir_server: str
    patient: str
    token: str | None = None
    hook: str = "patient-view"
    service_id: str | None = None  # default: the service discovery lists for the hook
    service_url: str | None = None  # default: the service in this process
    prefetch: bool = True
    user: str = "Practitioner/cds-service-check"
    draft_orders: Path | None = None
    as_json: bool = False
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class CheckResult:
    service_id: str
    status: int
    body: Any  # the service's answer (JSON), or its text when it is not JSON


class CheckFailed(Exception):
    """An expected failure, already explained in the message (printed without a traceback)."""


def run(options: CheckOptions, console: Console) -> int:
    try:
        result = asyncio.run(check(options, console))
    except CheckFailed as exc:
        console.error(str(exc))
        return 1
    if options.as_json:
        console.line(json.dumps(result.body, indent=2, ensure_ascii=False))
    if result.status != 200:
        console.error(f"the service answered HTTP {result.status}: {_service_problem(result.body)}")
        if result.status == 401:
            console.info(
                "  (it requires a signed JWT from a trusted EHR; for a local trial run it with CDS_AUTH=off)"
            )
        return 1
    if not options.as_json:
        title = f"Patient/{options.patient}, {result.service_id} ({options.hook})"
        for line in cards_view.render(result.body, console, title=title):
            console.line(line)
    return 0


async def check(options: CheckOptions, console: Console) -> CheckResult:
    """The service's HTTP status and parsed answer; ``CheckFailed`` for everything expected to go wrong."""
    target = FhirTarget(options.fhir_server, options.token)
    draft_orders = _read_draft_orders(options.draft_orders)
    try:
        context = hook_context(options.hook, options.patient, options.user, draft_orders)
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None
    timeout = httpx.Timeout(options.timeout_seconds, connect=10.0)
    try:
        async with (
            open_service(options.service_url, options.timeout_seconds) as service,
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http,
        ):
            service_id, templates = await _discover(service, options, console)
            fhir = FhirClient(http)
            with console.step(f"{'patient':<21} Patient/{options.patient} on {options.fhir_server}") as step:
                try:
                    patient = await read_patient(fhir, target, options.patient)
                except FhirNotFound as exc:
                    step.failed("not found")
                    raise CheckFailed(
                        f"Patient/{options.patient} is not on {options.fhir_server}: {exc.describe()}"
                    ) from None
                except FhirError as exc:
                    step.failed(f"HTTP {exc.status}" if exc.status else type(exc).__name__)
                    raise CheckFailed(f"FHIR server {options.fhir_server}: {exc.describe()}") from None
                step.done(_patient_line(patient))
            prefetch = None
            if options.prefetch:
                known = {f"Patient/{options.patient}": patient}
                prefetch = await resolve_prefetch(fhir, target, templates, context, console, known)
            body = hook_request(options.hook, context, target, prefetch)
            how = "" if options.prefetch else f" (no prefetch: it fetches from {options.fhir_server})"
            with console.step(f"calling {service_id} at {service.label}{how}") as step:
                answer = await service.call(service_id, body)
                step.done(f"HTTP {answer.status}")
            return CheckResult(service_id, answer.status, answer.body)
    except ServiceUnavailable as exc:
        raise CheckFailed(str(exc)) from None


async def _discover(
    service: ServiceSession, options: CheckOptions, console: Console
) -> tuple[str, dict[str, str]]:
    with console.step(f"discovery at {service.label}") as step:
        services = (await service.discovery()).get("services") or []
        step.done(f"{len(services)} services")
    matching = [
        s
        for s in services
        if isinstance(s, Mapping)
        and s.get("hook") == options.hook
        and (options.service_id is None or s.get("id") == options.service_id)
    ]
    if not matching:
        listed = ", ".join(f"{s.get('id')} ({s.get('hook')})" for s in services if isinstance(s, Mapping))
        wanted = f"{options.service_id!r} for " if options.service_id else ""
        raise CheckFailed(f"no service {wanted}hook {options.hook!r}; discovery lists: {listed or 'none'}")
    chosen = matching[0]
    templates = chosen.get("prefetch") or {}
    return str(chosen["id"]), {str(k): str(v) for k, v in templates.items()}


def _read_draft_orders(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckFailed(f"--draft-orders {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise CheckFailed(f"--draft-orders {path}: must be a FHIR Bundle of draft orders")
    return data


def _patient_line(patient: Mapping[str, Any]) -> str:
    parts = [str(patient.get(k)) for k in ("gender", "birthDate") if patient.get(k)]
    return "found" + (f" ({', '.join(parts)})" if parts else "")


def _service_problem(body: Any) -> str:
    if isinstance(body, Mapping):
        text = outcome_text(body)
        if text:
            return text
        return json.dumps(body)[:500]
    return str(body)[:500]
