"""``POST /cds-services/{id}``: answer a hook call. The handler only reads the body and delegates."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from cds_service.api import openapi_docs
from cds_service.api.body import read_body
from cds_service.api.deps import AppState, base_url, required_caller

router = APIRouter(tags=["CDS Hooks"])


@router.post(
    "/cds-services/{service_id}",
    summary="Call a CDS service (patient-view, order-select, order-sign)",
    operation_id="call_service",
    response_class=Response,
    responses=openapi_docs.HOOK_RESPONSES,
    openapi_extra=openapi_docs.hook_request_body(),
)
async def call_service(service_id: str, request: Request) -> Response:
    """Evaluate the hip-weakness rules for the patient in ``context`` and return cards.

    Missing prefetch is fetched from ``fhirServer``; 412 when required data cannot be obtained.
    """
    # The hot path: the state and the caller are taken directly, not through FastAPI's dependency
    # resolution (3 % of a call in the profile, docs/performance.md).
    state: AppState = request.app.state.cds
    caller = await required_caller(request, state)
    raw = await read_body(request, state.settings.max_request_bytes)
    outcome = await state.orchestrator.call(service_id, raw, caller, base_url(request, state.settings))
    return Response(orjson.dumps(outcome.response.wire()), media_type="application/json")
