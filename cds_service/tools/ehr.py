"""The EHR side of a hook call: context, prefetch resolved against the FHIR server, the request body.

This is what an EHR does before it calls a CDS service (CDS Hooks 2.0.1 §Prefetch): fill each
prefetch template from the hook context, run it against its FHIR server, and send the results. A
key whose query fails is sent as an OperationOutcome, as the specification allows, so the service
decides what that means (fetch it itself, answer 412, or note it on the card). Templates are filled
with the service's own ``prefetch.render`` so both sides agree on the tokens.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.fhir.client import FhirClient
from cds_service.fhir.errors import FhirError
from cds_service.fhir.outcomes import outcome_text
from cds_service.fixtures import searchset
from cds_service.prefetch import render
from cds_service.tools.console import Console

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FhirTarget:
    """The FHIR server the EHR (and the service, for missing prefetch) reads from. The token is never
    printed; it reaches the service as ``fhirAuthorization``."""

    base: str
    token: str | None


def hook_context(
    hook: str, patient_id: str, user_id: str, draft_orders: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The hook's context as an EHR fills it (order hooks: every draft order is selected)."""
    context: dict[str, Any] = {"userId": user_id, "patientId": patient_id}
    if hook in ("order-select", "order-sign"):
        if draft_orders is None:
            raise ValueError(f"the {hook} hook needs draft orders (--draft-orders FILE)")
        context["draftOrders"] = dict(draft_orders)
        if hook == "order-select":
            context["selections"] = [
                f"{r['resourceType']}/{r['id']}"
                for e in draft_orders.get("entry") or []
                if isinstance(r := e.get("resource"), dict) and r.get("id")
            ]
    return context


async def read_patient(fhir: FhirClient, target: FhirTarget, patient_id: str) -> dict[str, Any]:
    """``Patient/<id>``: proves the server, the token and the id before anything else is done."""
    return await fhir.read(target.base, f"Patient/{patient_id}", target.token)


async def resolve_prefetch(
    fhir: FhirClient,
    target: FhirTarget,
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    console: Console,
    known: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every template against the FHIR server, showing progress; ``known`` reads are reused."""
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        relative = render(template, context)
        if relative is None:
            console.warn(f"prefetch {key}: {template!r} needs a value the hook context lacks; not sent")
            continue
        if known and relative in known:
            prefetch[key] = known[relative]
            continue
        with console.step(f"{key:<21} {relative}") as step:
            try:
                if "?" in relative:
                    found = await fhir.search(target.base, relative, target.token)
                    prefetch[key] = searchset(found.resources)
                    pages = f", {found.pages} pages" if found.pages > 1 else ""
                    count = len(found.resources)
                    step.done(f"{count} resource{'' if count == 1 else 's'}{pages}")
                    for outcome in found.outcomes:
                        console.warn(f"the server said about {key}: {outcome_text(outcome) or outcome}")
                else:
                    prefetch[key] = await fhir.read(target.base, relative, target.token)
                    step.done("found")
            except FhirError as exc:
                step.failed(exc.describe())
                prefetch[key] = could_not_obtain(exc)
    return prefetch


def could_not_obtain(exc: FhirError) -> dict[str, Any]:
    """The OperationOutcome an EHR sends in place of a prefetch it could not run."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": exc.describe()[:500]}],
    }


def hook_request(
    hook: str,
    context: Mapping[str, Any],
    target: FhirTarget,
    prefetch: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The request body; holds the token, so it is never printed or logged."""
    body: dict[str, Any] = {
        "hookInstance": str(uuid.uuid4()),
        "hook": hook,
        "fhirServer": target.base.rstrip("/"),
        "context": dict(context),
    }
    if target.token:
        body["fhirAuthorization"] = {
            "access_token": target.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service-check",
        }
        if isinstance(context.get("patientId"), str):
            body["fhirAuthorization"]["patient"] = context["patientId"]
    if prefetch is not None:
        body["prefetch"] = dict(prefetch)
    return body
