"""Prefetch: substitute template tokens, use what the EHR sent, fetch what it did not, decide 412.

For each key of the service's prefetch templates (CDS Hooks 2.0.1 §Prefetch):
- a resource or Bundle  -> used; a Bundle with ``link[next]`` is paged through the FHIR server;
- ``null``              -> "no data", never refetched;
- an OperationOutcome   -> the EHR could not obtain it (bare, or a Bundle entry with ``search.mode:
  outcome`` at error/fatal severity): fetched by the service if it can, else "could not be obtained";
- absent                -> fetched from ``fhirServer`` with ``fhirAuthorization`` (or without a token where
  configuration allows: the CDS Hooks sandbox and open test servers send no token).
All fetches of one hook call share one time budget. A *required* key that cannot be obtained raises
``PrefetchUnavailable`` (HTTP 412). Optional keys that fail are reported on the card instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from cds_service.definitions import ServiceSpec
from cds_service.fhir.client import FhirClient, outcome_is_error, outcome_text
from cds_service.fhir.errors import FhirError
from cds_service.schemas import HookRequest

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
KeyStatus = Literal["supplied", "fetched", "null", "failed"]


class PrefetchUnavailable(Exception):
    """Required data could not be obtained (HTTP 412). ``problems``: key -> reason, safe to return."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = dict(problems)


class InvalidPrefetch(ValueError):
    """A prefetch value is not FHIR at all (a client bug: HTTP 400 naming the key)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


@dataclass
class KeyResult:
    key: str
    status: KeyStatus
    resources: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


@dataclass
class Resolved:
    keys: dict[str, KeyResult]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [r for k in self.keys.values() for r in k.resources]

    def with_status(self, status: KeyStatus) -> list[str]:
        return [k for k, v in self.keys.items() if v.status == status]

    def failed(self) -> dict[str, str]:
        return {k: v.problem or "could not be obtained" for k, v in self.keys.items() if v.status == "failed"}


@dataclass(frozen=True)
class FhirAccess:
    """Where and how missing data may be fetched for this call (None base: no FHIR access)."""

    base: str | None
    token: str | None
    refused: str | None = None  # why fetching is not allowed, for the 412 body

    @property
    def usable(self) -> bool:
        return self.base is not None and self.refused is None


def fhir_access(
    request: HookRequest,
    *,
    allow_without_token: bool,
    production: bool,
    allowed_servers: tuple[str, ...] = (),
) -> FhirAccess:
    """Decide whether this call may fetch from its ``fhirServer``, and with which token."""
    base = request.fhirServer
    if base is None:
        return FhirAccess(None, None, "the request names no fhirServer")
    token = request.fhirAuthorization.access_token.get_secret_value() if request.fhirAuthorization else None
    if allowed_servers and not any(base.startswith(prefix) for prefix in allowed_servers):
        return FhirAccess(base, None, "fhirServer is not registered for this CDS client")
    if token is None and not allow_without_token:
        return FhirAccess(
            base, None, "no fhirAuthorization was sent and unauthenticated FHIR access is disabled"
        )
    if token is not None and production and urlsplit(base).scheme != "https":
        return FhirAccess(base, None, "refusing to send the access token over plain http")
    return FhirAccess(base, token)


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """Substitute 2.0.1 tokens: ``{{context.<primitive field>}}`` and ``{{userPractitionerId}}``-style
    user tokens (from ``context.userId``). None when a token cannot be filled (the key is unobtainable)."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        value: object = None
        if name.startswith("context."):
            value = context.get(name.removeprefix("context."))
        elif name in _USER_TOKENS:
            user = context.get("userId")
            if isinstance(user, str) and user.startswith(_USER_TOKENS[name] + "/"):
                value = user.split("/", 1)[1]
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            missing = True
            return ""
        return str(value)

    rendered = _TOKEN.sub(fill, template)
    return None if missing else rendered


async def resolve(
    service: ServiceSpec,
    request: HookRequest,
    fhir: FhirClient,
    access: FhirAccess,
    budget_seconds: float,
) -> Resolved:
    """Resolve every prefetch key of ``service``; raise ``PrefetchUnavailable`` for required ones."""
    supplied = request.prefetch or {}
    results: dict[str, KeyResult] = {}
    to_fetch: dict[str, str] = {}
    to_page: dict[str, Mapping[str, Any]] = {}
    for key, template in service.prefetch.items():
        if key not in supplied:
            to_fetch[key] = template
            continue
        value = supplied[key]
        if value is None:
            results[key] = KeyResult(key, "null")
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise InvalidPrefetch(key, "must be a FHIR resource, a Bundle or null")
        if value["resourceType"] == "Bundle":
            resources, problem = _read_bundle(key, value)
        elif value["resourceType"] == "OperationOutcome":
            resources, problem = [], outcome_text(value) or "OperationOutcome without details"
        else:
            resources, problem = [value], None
        if problem is not None:
            logger.info("prefetch %s: EHR reported it could not obtain it", key)
            to_fetch[key] = template
            results[key] = KeyResult(key, "failed", problem=f"the EHR could not obtain it ({problem})")
            continue
        results[key] = KeyResult(key, "supplied", resources)
        if value["resourceType"] == "Bundle" and _has_next(value):
            to_page[key] = value

    deadline = asyncio.get_running_loop().time() + budget_seconds
    if to_fetch or to_page:
        await _fetch_all(request, fhir, access, budget_seconds, to_fetch, to_page, results)
    if access.usable:
        remaining = deadline - asyncio.get_running_loop().time()
        await _fetch_referenced_medications(fhir, access, results, remaining)

    required_failed = {
        k: results[k].problem or "could not be obtained"
        for k in service.required_prefetch
        if results[k].status == "failed"
    }
    if required_failed:
        raise PrefetchUnavailable(required_failed)
    keys = {k: results[k] for k in service.prefetch}
    if "referencedMedications" in results:
        keys["referencedMedications"] = results["referencedMedications"]
    return Resolved(keys)


async def _fetch_all(
    request: HookRequest,
    fhir: FhirClient,
    access: FhirAccess,
    budget_seconds: float,
    to_fetch: Mapping[str, str],
    to_page: Mapping[str, Mapping[str, Any]],
    results: dict[str, KeyResult],
) -> None:
    if not access.usable:
        reason = access.refused or "no FHIR server access"
        for key in to_fetch:
            earlier = results.get(key)
            results[key] = KeyResult(key, "failed", problem=_join(earlier, f"not prefetched, and {reason}"))
        for key in to_page:
            results[key] = KeyResult(key, "failed", problem=f"prefetch has more pages, and {reason}")
        return
    assert access.base is not None
    base = access.base

    async def fetch(key: str, template: str) -> KeyResult:
        relative = render(template, request.context)
        if relative is None:
            return KeyResult(key, "failed", problem="a prefetch token has no value in the hook context")
        try:
            if "?" in relative:
                found = await fhir.search(base, relative, access.token)
                if reported := _reported_error(found.outcomes):
                    return KeyResult(key, "failed", problem=f"the FHIR server reported an error: {reported}")
                return KeyResult(key, "fetched", found.resources)
            return KeyResult(key, "fetched", [await fhir.read(base, relative, access.token)])
        except FhirError as exc:
            return KeyResult(key, "failed", problem=_short(exc))

    async def page(key: str, first: Mapping[str, Any]) -> KeyResult:
        try:
            found = await fhir.search(base, None, access.token, first_page=first)
        except FhirError as exc:
            return KeyResult(key, "failed", problem=f"later pages could not be fetched: {_short(exc)}")
        if reported := _reported_error(found.outcomes):
            return KeyResult(
                key, "failed", problem=f"later pages: the FHIR server reported an error: {reported}"
            )
        return KeyResult(key, "supplied", found.resources)

    jobs = {key: asyncio.ensure_future(fetch(key, t)) for key, t in to_fetch.items()}
    jobs.update({key: asyncio.ensure_future(page(key, first)) for key, first in to_page.items()})
    done, pending = await asyncio.wait(jobs.values(), timeout=budget_seconds)
    for task in pending:
        task.cancel()
    for key, task in jobs.items():
        if task in done and not task.cancelled() and task.exception() is None:
            fetched = task.result()
            if fetched.status == "failed":
                fetched.problem = _join(results.get(key), fetched.problem or "")
            results[key] = fetched
        else:
            problem = f"FHIR time budget of {budget_seconds:g} s exceeded"
            if task in done and not task.cancelled() and task.exception() is not None:
                logger.error("prefetch %s: unexpected error %s", key, type(task.exception()).__name__)
                problem = "the FHIR server's answer could not be read"
            results[key] = KeyResult(key, "failed", problem=problem)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


MAX_MEDICATION_READS = 20


async def _fetch_referenced_medications(
    fhir: FhirClient, access: FhirAccess, results: dict[str, KeyResult], budget_seconds: float
) -> None:
    """Read ``Medication/<id>`` resources that medication requests/statements reference but the prefetch
    did not include (Epic and HAPI return the reference, not the code): an anticoagulant must not hide
    behind a reference. Unread ones stay unresolved and are reported on the card by the engine."""
    resources = [r for k in results.values() for r in k.resources]
    have = {r.get("id") for r in resources if r.get("resourceType") == "Medication"}
    wanted: list[str] = []
    for resource in resources:
        ref = resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, Mapping) else None
        if isinstance(target, str) and target.startswith("Medication/"):
            mid = target.removeprefix("Medication/").split("/")[0]
            if mid and mid not in have and mid not in wanted:
                wanted.append(mid)
    if not wanted or budget_seconds <= 0 or access.base is None:
        return
    base = access.base
    jobs = [
        asyncio.ensure_future(fhir.read(base, f"Medication/{mid}", access.token))
        for mid in wanted[:MAX_MEDICATION_READS]
    ]
    done, pending = await asyncio.wait(jobs, timeout=budget_seconds)
    for task in pending:
        task.cancel()
    found = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    found = [m for m in found if m.get("resourceType") == "Medication"]
    if found:
        results["referencedMedications"] = KeyResult("referencedMedications", "fetched", found)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


def _reported_error(outcomes: list[dict[str, Any]]) -> str | None:
    """What a server said in a 200 searchset's OperationOutcome of severity error/fatal (the search did
    not complete: its results cannot be trusted to be all there is)."""
    for outcome in outcomes:
        if outcome_is_error(outcome):
            return (outcome_text(outcome) or "OperationOutcome without details")[:300]
    return None


def _read_bundle(key: str, bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """One pass over a supplied Bundle: its resources, or why the EHR could not obtain them (an
    OperationOutcome entry of error/fatal severity; informational ones, e.g. Epic's "no results", are
    not patient data and not errors). A Bundle is untrusted JSON: only well-formed entries count."""
    entries = bundle.get("entry")
    if entries is None:
        return [], None
    if not isinstance(entries, list):
        raise InvalidPrefetch(key, "Bundle.entry must be an array")
    resources: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource") if type(entry) is dict else None
        if type(resource) is not dict:
            continue
        if resource.get("resourceType") != "OperationOutcome":
            resources.append(resource)
        elif outcome_is_error(resource):
            return [], outcome_text(resource) or "OperationOutcome entry"
    return resources, None


def _has_next(bundle: Mapping[str, Any]) -> bool:
    links = bundle.get("link")
    return isinstance(links, list) and any(
        isinstance(link, dict) and link.get("relation") == "next" for link in links
    )


def _short(exc: FhirError) -> str:
    return exc.describe()[:300]


def _join(earlier: KeyResult | None, problem: str) -> str:
    return f"{earlier.problem}; then {problem}" if earlier and earlier.problem else problem
