"""Dependencies as named ``Annotated`` aliases: handler signatures read as a list of what they need.

Two credentials, never interchangeable: the EHR's signed JWT (``CallerDep``: hook calls, feedback) and
the reviewers' audit token (``AuditAccess``: audit and explain endpoints), a bearer token compared in
constant time with ``CDS_AUDIT_TOKEN``.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cds_service.api.errors import Unauthorized
from cds_service.artefacts import FhirArtefacts
from cds_service.audit import AuditTrail
from cds_service.catalog import Catalog
from cds_service.config import Settings
from cds_service.hookcall import Caller
from cds_service.metrics import Metrics
from cds_service.orchestrate import Orchestrator
from cds_service.pages.examples import FixtureExamples
from cds_service.security import AuthenticationFailed, ClientAuthenticator

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """Everything long-lived, built once in ``create_app`` and its lifespan."""

    settings: Settings
    catalog: Catalog
    orchestrator: Orchestrator
    authenticator: ClientAuthenticator | None  # None: CDS_AUTH=off
    http: httpx.AsyncClient
    audit: AuditTrail
    metrics: Metrics
    examples: FixtureExamples  # the rule pages' example patients, computed on first use
    fhir: FhirArtefacts  # the rules as FHIR knowledge artefacts, generated with the catalog


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cds
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def base_url(request: Request, settings: Settings) -> str:
    """The service's external base URL (configured, else as the request reached us)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def audience(request: Request, settings: Settings) -> str:
    """The JWT ``aud`` this endpoint expects: the exact URL invoked."""
    return base_url(request, settings) + request.url.path


async def _caller(request: Request, state: StateDep, required: bool) -> Caller:
    header = request.headers.get("authorization")
    if state.authenticator is None or (header is None and not required):
        return Caller()
    try:
        identity = await state.authenticator.authenticate(header, audience(request, state.settings))
    except AuthenticationFailed as exc:
        state.metrics.auth_failures.labels(exc.reason).inc()
        raise
    return Caller(identity.iss, identity.tenant, identity.fhir_servers)


async def required_caller(request: Request, state: StateDep) -> Caller:
    """The verified CDS client; 401 without a valid token (unless CDS_AUTH=off)."""
    return await _caller(request, state, required=True)


async def optional_caller(request: Request, state: StateDep) -> Caller:
    """Discovery: a token is verified when sent (a bad one is refused) but not required."""
    return await _caller(request, state, required=False)


CallerDep = Annotated[Caller, Depends(required_caller)]
OptionalCallerDep = Annotated[Caller, Depends(optional_caller)]


audit_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AuditToken",
    description="The reviewers' credential: `Authorization: Bearer <CDS_AUDIT_TOKEN>`. Not the EHR's JWT. "
    "`make run` prints a generated one.",
)


async def require_audit_token(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(audit_bearer)],
) -> None:
    """401 unless the request carries the audit token (always 401 when none is configured)."""
    if state.settings.audit_token is None:
        raise Unauthorized("no audit token is configured on this server (CDS_AUDIT_TOKEN)")
    if credentials is None:
        raise Unauthorized()
    if not is_audit_token(state.settings, credentials.credentials):
        raise Unauthorized("the bearer token is not the audit token")


def is_audit_token(settings: Settings, token: str | None) -> bool:
    """``token`` is the configured audit token (compared in constant time); False when none is set."""
    expected = settings.audit_token
    if expected is None or not token:
        return False
    if hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        return True
    logger.warning("audit credential refused")
    return False


AuditAccess = Security(require_audit_token)
