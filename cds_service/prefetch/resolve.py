"""Prefetch: use what the EHR sent, fetch what it did not, all within one time budget.

For each key of the service's plan (CDS Hooks 2.0.1 §Prefetch):
- a resource or Bundle  -> used; a Bundle with ``link[next]``: the rest is paged from the FHIR server,
  and those resources count as fetched, not supplied;
- ``null``              -> "no data", never refetched;
- an OperationOutcome   -> the EHR could not obtain it: fetched by the service if it can;
- absent                -> fetched from ``fhirServer`` with ``fhirAuthorization`` (or without a token where
  configuration allows: the CDS Hooks sandbox and open test servers send no token), with the profile's
  fallbacks when the server refuses a query.
Every fetch of one call shares one deadline; what arrived before it is kept. The same resource under two
keys (an exam Observation that also matches a code search) is used once. Nothing here answers 412: the
orchestrator decides, knowing what the data that did arrive shows (``Resolved.failed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cds_service.definitions import Service
from cds_service.fhir.client import FhirClient
from cds_service.prefetch.fetch import FhirAccess, KeyFetch, run_until
from cds_service.prefetch.medications import fetch_referenced_medications
from cds_service.prefetch.supplied import InvalidPrefetch, Supplied

logger = logging.getLogger(__name__)

KeyStatus = Literal["supplied", "fetched", "paged", "null", "failed"]


class PrefetchUnavailable(Exception):
    """Required data could not be obtained (HTTP 412). ``problems``: key -> reason, safe to return."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = dict(problems)


@dataclass
class KeyResult:
    """One key: how it was obtained (``paged``: the EHR's first page, the rest fetched by the service),
    its resources after de-duplication, how many the EHR supplied and the service fetched, and why it is
    incomplete (a ``failed`` key may still hold the pages that arrived in time)."""

    key: str
    status: KeyStatus
    resources: list[dict[str, Any]] = field(default_factory=list)
    supplied: int = 0
    fetched: int = 0
    problem: str | None = None
    about: str = ""


@dataclass
class Resolved:
    keys: dict[str, KeyResult]
    duplicates: int = 0  # resources that arrived under two keys and were used once

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [r for k in self.keys.values() for r in k.resources]

    def with_status(self, status: KeyStatus) -> list[str]:
        return [k for k, v in self.keys.items() if v.status == status]

    def failed(self) -> dict[str, str]:
        return {k: _described(v) for k, v in self.keys.items() if v.status == "failed"}


async def resolve(
    service: Service,
    supplied: Mapping[str, Supplied | InvalidPrefetch | None],
    context: Mapping[str, Any],
    fhir: FhirClient,
    access: FhirAccess,
    budget_seconds: float,
) -> Resolved:
    """Resolve every prefetch key of ``service`` within ``budget_seconds``. ``supplied``: the request's
    prefetch, read (``hookbody``); ``context``: the hook context, for the templates' tokens."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_seconds
    results: dict[str, KeyResult] = {}
    jobs: dict[str, tuple[KeyFetch, Any]] = {}
    earlier: dict[str, str] = {}  # key -> what the EHR said when it could not obtain the data
    for key, plan in service.plans.items():
        value = supplied.get(key)
        if isinstance(value, InvalidPrefetch):
            raise value
        if key in supplied and value is None:
            results[key] = KeyResult(key, "null", about=plan.about)
            continue
        if value is not None and value.problem is not None:
            earlier[key] = value.problem
            logger.info("prefetch %s: EHR reported it could not obtain it", key)
        elif value is not None:
            results[key] = KeyResult(key, "supplied", value.resources, value.count, about=plan.about)
            if value.first_page is None:
                continue
        if not access.usable:
            reason = access.refused or "no FHIR server access"
            result = results.setdefault(key, KeyResult(key, "failed", about=plan.about))
            result.status = "failed"
            result.problem = _then(
                earlier.get(key),
                f"prefetch has more pages, and {reason}"
                if key in results and value and value.first_page
                else f"not prefetched, and {reason}",
            )
            continue
        job = KeyFetch(plan)
        first = value.first_page if value is not None else None
        jobs[key] = (job, job.page(fhir, access, first) if first else job.run(fhir, access, context))
    if jobs:
        await run_until([coroutine for _, coroutine in jobs.values()], deadline - loop.time())
        for key, (job, _) in jobs.items():
            _settle(results, key, job, budget_seconds, earlier.get(key))
    if access.usable:
        fetched = await fetch_referenced_medications(
            fhir, access, [r for k in results.values() for r in k.resources], deadline - loop.time()
        )
        if fetched:
            results["referencedMedications"] = KeyResult(
                "referencedMedications", "fetched", fetched, fetched=len(fetched)
            )
    ordered = {k: results[k] for k in service.plans if k in results}
    ordered.update({k: v for k, v in results.items() if k not in ordered})
    return Resolved(ordered, _deduplicate(ordered))


def _settle(
    results: dict[str, KeyResult], key: str, job: KeyFetch, budget: float, earlier: str | None
) -> None:
    """Record one fetch: complete, or failed with what arrived in time."""
    paged = key in results and results[key].status == "supplied"
    result = results.setdefault(key, KeyResult(key, "fetched", about=job.plan.about))
    arrived = job.resources
    result.resources = [*result.resources, *arrived] if paged else arrived
    result.fetched = len(arrived)
    if job.problem == "not fetched":  # still running at the deadline (or broke unexpectedly)
        job.problem = f"FHIR time budget of {budget:g} s exceeded"
    if job.problem is None:
        result.status = "paged" if paged else "fetched"
    else:
        result.status, result.problem = "failed", _then(earlier, job.problem)


def _deduplicate(results: Mapping[str, KeyResult]) -> int:
    """Keep each (resourceType, id) once, under the first key it arrived in; count the repeats."""
    seen: set[tuple[str, str]] = set()
    repeats = 0
    for result in results.values():
        kept = []
        for resource in result.resources:
            rid = resource.get("id")
            if isinstance(rid, str):
                identity = (str(resource.get("resourceType")), rid)
                if identity in seen:
                    repeats += 1
                    continue
                seen.add(identity)
            kept.append(resource)
        result.resources = kept
    return repeats


def _described(result: KeyResult) -> str:
    """The problem, then what the key stands for: "...: HTTP 500. It holds every Condition of the
    patient." A partial result says so: the pages that arrived were used."""
    text = result.problem or "could not be obtained"
    if result.resources:
        text += f" ({len(result.resources)} resources that did arrive were used)"
    return f"{text}. It holds {result.about}." if result.about else text


def _then(earlier: str | None, problem: str) -> str:
    return f"the EHR could not obtain it ({earlier}); then {problem}" if earlier else problem
