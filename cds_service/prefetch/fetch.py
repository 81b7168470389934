"""Fetching one prefetch key from the EHR's FHIR server, as its plan says: the profile's query, then each
fallback in turn when the server refuses the query (HTTP 400 or 422: a search it does not support), or
the remaining pages of a Bundle the EHR started.

A ``KeyFetch`` keeps what has arrived as it arrives: when the call's time budget runs out, the caller
cancels it and still has every page read so far (a red flag on page one is not lost to a slow page five).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cds_service.definitions import KeyPlan
from cds_service.fhir.client import FhirClient, SearchResult
from cds_service.fhir.errors import FhirError
from cds_service.fhir.outcomes import outcome_is_error, outcome_text
from cds_service.prefetch.templates import render
from cds_service.schemas import HookRequest

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: HTTP statuses with which a server refuses a query it does not support (then a fallback is tried).
REFUSED = frozenset({400, 422})
#: After a deadline, how long cancelled fetches may take to let go of their connections.
CANCEL_GRACE_SECONDS = 0.1


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


@dataclass
class KeyFetch:
    """One key being fetched. ``results`` fill as pages arrive; ``problem`` is None once complete."""

    plan: KeyPlan
    results: list[SearchResult] = field(default_factory=list)
    read: list[dict[str, Any]] = field(default_factory=list)  # a read (``Patient/x``), not a search
    problem: str | None = "not fetched"
    tried: list[str] = field(default_factory=list)  # what was refused, for the 412 or the card

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [*self.read, *(r for result in self.results for r in result.resources)]

    async def run(self, fhir: FhirClient, access: FhirAccess, context: Mapping[str, Any]) -> None:
        """The query, then its fallbacks while the server refuses; sets ``problem`` (None: all read)."""
        assert access.base is not None
        for group in ((self.plan.query,), *self.plan.fallbacks):
            queries = [render(q, context) for q in group]
            if any(q is None for q in queries):
                self.problem = "a prefetch token has no value in the hook context"
                return
            self.results = []
            try:
                await asyncio.gather(*(self._one(fhir, access, q) for q in queries if q is not None))
            except FhirError as exc:
                if exc.status in REFUSED:
                    self.tried.append(f"refused ({exc.describe()[:200]})")
                    continue
                self.problem = _join(self.tried, exc.describe()[:300])
                return
            reported = _reported_error(self.results)
            self.problem = None if reported is None else f"the FHIR server reported an error: {reported}"
            return
        self.problem = _join(self.tried[:-1], f"the FHIR server {self.tried[-1]}" if self.tried else "")

    async def page(self, fhir: FhirClient, access: FhirAccess, first: Mapping[str, Any]) -> None:
        """The pages after the EHR's first one (``link[next]``)."""
        assert access.base is not None
        result = SearchResult()
        self.results = [result]
        try:
            await fhir.search(access.base, None, access.token, after=first, into=result)
        except FhirError as exc:
            self.problem = f"later pages could not be fetched: {exc.describe()[:300]}"
            return
        reported = _reported_error(self.results)
        self.problem = None if reported is None else f"later pages: the FHIR server reported: {reported}"

    async def _one(self, fhir: FhirClient, access: FhirAccess, relative: str) -> None:
        assert access.base is not None
        if "?" not in relative:
            self.read.append(await fhir.read(access.base, relative, access.token))
            return
        result = SearchResult()
        self.results.append(result)
        await fhir.search(access.base, relative, access.token, into=result)


async def run_until(coroutines: Iterable[Coroutine[Any, Any, T]], seconds: float) -> set[asyncio.Task[T]]:
    """Run the coroutines together for at most ``seconds``; cancel the rest (waiting only a moment for
    them to let go, so a call never answers much later than its budget). The finished tasks."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    if not tasks:
        return set()
    done, pending = await asyncio.wait(tasks, timeout=max(seconds, 0))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.error("FHIR fetch: unexpected error %s", type(task.exception()).__name__)
    return done


def _reported_error(results: list[SearchResult]) -> str | None:
    """What a server said in a 200 searchset's OperationOutcome of severity error/fatal (the search did
    not complete: its results cannot be trusted to be all there is)."""
    for result in results:
        for outcome in result.outcomes:
            if outcome_is_error(outcome):
                return (outcome_text(outcome) or "OperationOutcome without details")[:300]
    return None


def _join(earlier: list[str], last: str) -> str:
    return "; then ".join([*(f"the FHIR server {t}" for t in earlier), last]) if earlier else last
