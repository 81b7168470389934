"""Domain exceptions -> HTTP status and a FHIR OperationOutcome body, in one place.

Every non-2xx answer carries an OperationOutcome (CDS Hooks 3.0 recommends it) naming the problem and,
where it applies, the field (``expression``). Never a stack trace, never the input's values, never a
token. A 401 says which check failed, in fixed words (``security.failures``): an integrator whose EHR is
refused can fix its configuration without reading our logs; the token is never echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_service.artefacts import UnknownResource, UnsupportedSearch
from cds_service.audit.database import StoreUnavailable
from cds_service.catalog import UnknownService
from cds_service.orchestrate import HookMismatch
from cds_service.prefetch import InvalidPrefetch, PrefetchUnavailable
from cds_service.schemas import InvalidInput, MalformedJson
from cds_service.security import AuthenticationFailed, www_authenticate

logger = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"


class RequestTooLarge(Exception):
    """The body exceeds ``CDS_MAX_REQUEST_BYTES``."""


class UnsupportedMediaType(Exception):
    """The body is declared as something other than JSON."""


class Unauthorized(Exception):
    """Audit, explain or metrics credential missing (``description`` None) or wrong (what is wrong)."""

    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or "no bearer token was sent")
        self.description = description


def outcome(
    status: int,
    code: str,
    diagnostics: str,
    expressions: Sequence[str] = (),
    headers: dict[str, str] | None = None,
    severity: str = "error",
) -> Response:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expressions:
        issue["expression"] = list(expressions)
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _unauthorized_outcome(description: str | None) -> Response:
    """401 with RFC 6750's ``WWW-Authenticate`` and the same words in the OperationOutcome."""
    diagnostics = f"Authentication failed: {description}" if description else "Authentication required"
    return outcome(401, "security", diagnostics, headers={"WWW-Authenticate": www_authenticate(description)})


def validation_outcome(errors: Sequence[Any], prefix: str = "") -> Response:
    issues = []
    for error in list(errors)[:20]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        where = ".".join(([prefix] if prefix else []) + loc)
        issues.append(
            {
                "severity": "error",
                "code": "required" if error.get("type") == "missing" else "invalid",
                "diagnostics": f"{where or 'body'}: {error.get('msg', 'invalid')}",
                **({"expression": [where]} if where else {}),
            }
        )
    body = {"resourceType": "OperationOutcome", "issue": issues}
    return Response(orjson.dumps(body), status_code=400, media_type=FHIR_JSON)


def document_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what ``install`` does: every error is an OperationOutcome served as
    ``application/fhir+json``, and a request that fails validation gets 400 (FastAPI documents 422 with
    its own error model). Changes ``schema`` in place and returns it."""
    outcome_schema = {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.get("responses", {})
            if "422" in responses:
                del responses["422"]
                responses.setdefault(
                    "400",
                    {"description": "A parameter or the body is invalid (the OperationOutcome names it)."},
                )
            for status, response in responses.items():
                if not status.startswith(("4", "5")):
                    continue
                content = response.setdefault("content", {})
                documented = content.pop("application/json", None) or content.get(FHIR_JSON)
                content[FHIR_JSON] = documented if documented and documented.get("schema") else outcome_schema
    components = schema.get("components", {}).get("schemas", {})
    if (
        "HTTPValidationError" in components
        and "HTTPValidationError" not in orjson.dumps(schema.get("paths", {})).decode()
    ):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    """Register the exception handlers on the app."""

    @app.exception_handler(UnknownService)
    async def _unknown(_: Request, exc: UnknownService) -> Response:
        return outcome(
            404, "not-found", f"Unknown CDS service {exc.service_id[:64]!r}; see GET /cds-services"
        )

    @app.exception_handler(UnknownResource)
    async def _unknown_resource(_: Request, exc: UnknownResource) -> Response:
        return outcome(404, "not-found", str(exc))

    @app.exception_handler(UnsupportedSearch)
    async def _search(_: Request, exc: UnsupportedSearch) -> Response:
        return outcome(400, "not-supported", str(exc), [exc.parameter[:40]])

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> Response:
        return validation_outcome(exc.errors())

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> Response:
        return validation_outcome(exc.error.errors(include_input=False), prefix=exc.prefix)

    @app.exception_handler(HookMismatch)
    async def _hook(_: Request, exc: HookMismatch) -> Response:
        return outcome(400, "invalid", str(exc), ["hook"])

    @app.exception_handler(InvalidPrefetch)
    async def _prefetch(_: Request, exc: InvalidPrefetch) -> Response:
        return outcome(400, "invalid", f"prefetch.{exc.key}: {exc}", [f"prefetch.{exc.key}"])

    @app.exception_handler(PrefetchUnavailable)
    async def _unavailable(_: Request, exc: PrefetchUnavailable) -> Response:
        issues = [
            {
                "severity": "error",
                "code": "incomplete",
                "diagnostics": f"Required prefetch {key!r} could not be obtained: {problem}",
                "expression": [f"prefetch.{key}"],
            }
            for key, problem in exc.problems.items()
        ]
        body = {"resourceType": "OperationOutcome", "issue": issues}
        return Response(orjson.dumps(body), status_code=412, media_type=FHIR_JSON)

    @app.exception_handler(AuthenticationFailed)
    async def _auth(_: Request, exc: AuthenticationFailed) -> Response:
        logger.warning("authentication failed reason=%s", exc.reason)
        return _unauthorized_outcome(None if exc.reason == "missing" else exc.description)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> Response:
        return _unauthorized_outcome(exc.description)

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> Response:
        retry = str(max(1, round(request.app.state.cds.settings.audit_retry_seconds)))
        return outcome(503, "transient", str(exc), headers={"Retry-After": retry})

    @app.exception_handler(RequestTooLarge)
    async def _too_large(_: Request, exc: RequestTooLarge) -> Response:
        return outcome(413, "too-long", str(exc))

    @app.exception_handler(UnsupportedMediaType)
    async def _media(_: Request, exc: UnsupportedMediaType) -> Response:
        return outcome(415, "not-supported", str(exc))

    @app.exception_handler(MalformedJson)
    async def _json(_: Request, exc: MalformedJson) -> Response:
        return outcome(400, "structure", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = {400: "invalid", 404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return outcome(exc.status_code, code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return outcome(500, "exception", "Internal error; the service logged it.")
