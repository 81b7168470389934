"""``POST /cds-services/{id}``: answer a hook call. The handler only reads the body and delegates."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from cds_service.api import openapi_docs
from cds_service.api.body import read_json_object
from cds_service.api.deps import CallerDep, StateDep, base_url

router = APIRouter(tags=["CDS Hooks"])


@router.post(
    "/cds-services/{service_id}",
    summary="Call a CDS service (patient-view, order-select, order-sign)",
    operation_id="call_service",
    response_class=Response,
    responses=openapi_docs.HOOK_RESPONSES,
    openapi_extra=openapi_docs.hook_request_body(),
)
async def call_service(service_id: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    """Evaluate the hip-weakness rules for the patient in ``context`` and return cards.

    Missing prefetch is fetched from ``fhirServer``; 412 when required data cannot be obtained.
    """
    body: dict[str, Any] = await read_json_object(request, state.settings.max_request_bytes)
    outcome = await state.orchestrator.call(service_id, body, caller, base_url(request, state.settings))
    return Response(orjson.dumps(outcome.response.wire()), media_type="application/json")
