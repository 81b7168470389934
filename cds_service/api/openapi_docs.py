"""OpenAPI details the handlers cannot express themselves: request schemas, error bodies, real examples.

The hook and feedback handlers read their bodies with orjson (speed, 413/415 control), so their request
schemas are added here, and every route's error responses are documented as the FHIR OperationOutcome
the service sends. Examples are real fixtures (``fhir_fixtures/examples/``), so "Try it out" works.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cds_service.api.errors import document_error_responses
from cds_service.audit.feedback import FeedbackRequest
from cds_service.config import PROJECT_ROOT
from cds_service.schemas import CdsResponse, HookRequest, OperationOutcome

EXAMPLES_DIR = PROJECT_ROOT / "fhir_fixtures" / "examples"
REF = "#/components/schemas/{model}"


@cache
def _examples(kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(Path(EXAMPLES_DIR).glob(f"*.{kind}.json")):
        data = json.loads(path.read_text())
        name = path.name.removesuffix(f".{kind}.json")
        out[name] = {"summary": data.get("summary", name), "value": data["value"]}
    return out


def hook_request_body() -> dict[str, Any]:
    content: dict[str, Any] = {"schema": {"$ref": REF.format(model="HookRequest")}}
    if examples := _examples("request"):
        content["examples"] = examples
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


def error_response(description: str) -> dict[str, Any]:
    """A documented error response: every error body is a FHIR OperationOutcome."""
    return {"description": description, "model": OperationOutcome}


HOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'Cards (`{"cards": []}` when there is nothing to say).',
        "model": CdsResponse,
        "content": {"application/json": {"examples": _examples("response")}} if _examples("response") else {},
    },
    400: error_response(
        "Malformed body, wrong hook for the service, or missing/invalid context (OperationOutcome)."
    ),
    401: error_response("Missing or invalid CDS client JWT."),
    404: error_response("Unknown service id."),
    412: error_response("Required prefetch data could not be obtained (names the prefetch key and why)."),
    413: error_response("Request body too large."),
    415: error_response("Body is not JSON."),
}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that also publishes the request schemas and the error bodies."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (HookRequest, FeedbackRequest):
            request_schema = model.model_json_schema(ref_template=REF)
            for name, definition in request_schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = request_schema
        app.openapi_schema = document_error_responses(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
