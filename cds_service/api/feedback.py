"""``POST /cds-services/{id}/feedback``: what clinicians did with the cards (CDS Hooks 2.0.1 §Feedback).

The EHR authenticates with its JWT, as for hook calls. The answer is ``200 {}`` only once every entry of
the request is committed to the store (one transaction: all or nothing), ``503`` with ``Retry-After``
when the store cannot take it, so that the EHR sends it again. Entries already stored are acknowledged
and not stored twice (idempotent), so a retried or repeated batch is harmless.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from cds_service.api.body import read_json_object
from cds_service.api.deps import CallerDep, StateDep
from cds_service.api.errors import RequestTooLarge
from cds_service.api.openapi_docs import error_response
from cds_service.audit import feedback as parsing
from cds_service.hookcall import utc_now
from cds_service.schemas import parse_input

router = APIRouter(tags=["CDS Hooks"])

SCHEMA_REF = "#/components/schemas/{model}"

EXAMPLES: dict[str, dict[str, Any]] = {
    "accepted": {
        "summary": "Suggestion accepted (spec example)",
        "value": {
            "feedback": [
                {
                    "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                    "outcomeTimestamp": "2021-12-11T10:05:31Z",
                }
            ]
        },
    },
    "overridden": {
        "summary": "Overridden without a reason (spec example)",
        "value": {
            "feedback": [
                {
                    "card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
                    "outcome": "overridden",
                    "outcomeTimestamp": "2020-12-11T00:00:00Z",
                }
            ]
        },
    },
    "overridden-with-reason": {
        "summary": "Overridden with a reason and a comment (spec example)",
        "value": {
            "feedback": [
                {
                    "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                    "outcome": "overridden",
                    "overrideReason": {
                        "reason": {
                            "code": "d7ecf885",
                            "system": "https://example.com/cds-hooks/override-reason-system",
                        },
                        "userComment": "A comment entered by the clinician.",
                    },
                    "outcomeTimestamp": "2020-12-11T00:00:00Z",
                }
            ]
        },
    },
    "epic": {
        "summary": "Epic: overrideReasons, a card id that is not a UUID",
        "value": {
            "feedback": [
                {
                    "card": "123456",
                    "outcome": "overridden",
                    "overrideReasons": {
                        "reason": {
                            "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                            "code": "cds-not-applicable",
                            "display": "Does not apply to this patient (e.g. already assessed or arranged)",
                        }
                    },
                    "outcomeTimestamp": "2024-03-01T14:02:11Z",
                }
            ]
        },
    },
    "sandbox": {
        "summary": "CDS Hooks sandbox: dismissed card without uuid, reason without display",
        "value": {
            "feedback": [
                {
                    "outcome": "overridden",
                    "overrideReason": {
                        "reason": {
                            "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                            "code": "recipient-disagrees-evidence",
                        }
                    },
                    "outcomeTimestamp": "2026-01-15T12:00:05.123Z",
                }
            ]
        },
    },
    "batch": {
        "summary": "A batch: one card accepted, another overridden",
        "value": {
            "feedback": [
                {
                    "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                    "outcomeTimestamp": "2021-12-11T10:05:31Z",
                },
                {
                    "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                    "outcome": "overridden",
                    "overrideReason": {"userComment": "Seen by orthopaedics yesterday."},
                    "outcomeTimestamp": "2021-12-11T10:06:02Z",
                },
            ]
        },
    },
}


@router.post(
    "/cds-services/{service_id}/feedback",
    summary="Feedback: what the clinician did with a card",
    operation_id="send_feedback",
    response_class=Response,
    responses={
        200: {
            "description": "Every entry is durably stored (or already was); the body is an empty object.",
            "content": {"application/json": {"schema": {"type": "object"}, "example": {}}},
        },
        400: error_response(
            "Not a feedback body: `outcome` is not accepted|overridden, a timestamp is not one."
        ),
        401: error_response("Missing or invalid CDS client JWT."),
        404: error_response("Unknown service id."),
        413: error_response("Body too large, or more than CDS_FEEDBACK_MAX_ITEMS entries."),
        415: error_response("Body is not JSON."),
        503: error_response(
            "The store could not take the feedback; nothing was stored. Retry after `Retry-After`."
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": SCHEMA_REF.format(model="FeedbackRequest")},
                    "examples": EXAMPLES,
                }
            },
        }
    },
)
async def send_feedback(service_id: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    """Record accepted / overridden feedback for cards this service returned.

    Accepts the CDS Hooks 2.0.1 shape and what real clients send: Epic's `overrideReasons` (object or
    list) and reason extensions, card ids that are not UUIDs, reason Codings without `display`, and the
    sandbox's `overridden` entries without `card`. Batches and repeats are fine: the same (card, outcome,
    outcomeTimestamp, accepted suggestions) is stored once. The free-text `userComment` is not stored
    (only that there was one) unless the site turns `CDS_AUDIT_STORE_USER_COMMENTS` on.

    Answers `200 {}` after the whole batch is committed; `503` (retryable, nothing stored) otherwise.
    """
    state.catalog.service(service_id)  # 404 for an unknown service
    body = await read_json_object(request, state.settings.max_request_bytes)
    items = body.get("feedback")
    if isinstance(items, list) and len(items) > state.settings.feedback_max_items:
        raise RequestTooLarge(
            f"more than {state.settings.feedback_max_items} feedback entries in one request"
        )
    parsed = parse_input(parsing.FeedbackRequest, body)
    entries = parsing.entries(
        parsed,
        service_id,
        client_iss=caller.iss,
        client_tenant=caller.tenant,
        received_at=utc_now(),
        store_comments=state.settings.audit_store_user_comments,
        reason_displays=state.catalog.override_reason_displays,
    )
    await state.audit.record_feedback(entries)
    state.metrics.record_feedback(entry.outcome for entry in entries)
    return Response(orjson.dumps({}), media_type="application/json")
