"""``POST /explain/{id}``: the cards for a hook request plus the full evaluation trace, recording nothing.

For reviewers and rule authors: send the body an EHR would send and see every rule, fired or not, with
the data behind each condition (including the EHR's display texts, which the audit trail never stores),
and what could not be read. It needs the audit token, not an EHR JWT, and writes no audit record.

It fetches missing prefetch only from servers listed in ``CDS_EXPLAIN_FHIR_SERVERS``: otherwise anyone
holding the audit token could make the service call arbitrary URLs. Without that setting, ``fhirServer``
and ``fhirAuthorization`` are ignored and the body's prefetch is all that is evaluated.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from cds_service.api.body import read_body
from cds_service.api.deps import AuditAccess, StateDep, base_url
from cds_service.api.openapi_docs import error_response, hook_request_body
from cds_service.audit.views import ExplainResponse
from cds_service.hookcall import Caller
from cds_service.trace import evaluation_trace

router = APIRouter(tags=["Audit"], dependencies=[AuditAccess])


@router.post(
    "/explain/{service_id}",
    summary="Explain: the cards for a request, with every rule's evaluation (records nothing)",
    operation_id="explain",
    response_class=Response,
    responses={
        200: {
            "description": "Cards, prefetch status and the full evaluation trace.",
            "model": ExplainResponse,
        },
        400: error_response("Malformed body, wrong hook for the service, or missing/invalid context."),
        401: error_response("Missing or wrong audit token."),
        404: error_response("Unknown service id."),
        412: error_response(
            "Required prefetch is missing and may not be fetched (see CDS_EXPLAIN_FHIR_SERVERS)."
        ),
        413: error_response("Request body too large."),
        415: error_response("Body is not JSON."),
    },
    openapi_extra=hook_request_body(),
)
async def explain(service_id: str, request: Request, state: StateDep) -> Response:
    """Evaluate the request exactly as `POST /cds-services/{id}` would and return, besides the cards:

    - `trace.rules`: every rule with its version, whether it **fired** (or matched but was gated), the
      facts it fired on (resource type, id, code, date, value, and here the EHR's display text) and each
      condition (`leaves`) with its result;
    - `trace.unreadable`: resources the engine could not use and whether they could hide a red flag;
    - `prefetch`: for each key, supplied / fetched / null / failed.

    Nothing is written to the audit trail. Missing prefetch is fetched only from
    `CDS_EXPLAIN_FHIR_SERVERS`; otherwise only the prefetch in the body is evaluated.
    """
    raw = await read_body(request, state.settings.max_request_bytes)
    allowed = tuple(state.settings.explain_fhir_servers)
    outcome = await state.orchestrator.call(
        service_id,
        raw,
        Caller(fhir_servers=allowed),
        base_url(request, state.settings),
        record=False,
        fhir=bool(allowed),
    )
    document = {
        "cards": outcome.response.wire()["cards"],
        "prefetch": {key: result.status for key, result in outcome.prefetch.keys.items()},
        "trace": evaluation_trace(outcome.evaluation, state.catalog.version, include_text=True),
        "recorded": False,
    }
    return Response(orjson.dumps(document), media_type="application/json")
