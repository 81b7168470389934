"""``/fhir``: the rules and value sets as a read-only FHIR R4 server (``application/fhir+json``).

Every resource was generated once at start-up from the catalog the service runs (``cds_service.artefacts``);
these routes only look them up. Public, like ``GET /rules``: the content is the same. Errors are
OperationOutcomes (unknown id 404, unsupported search parameter 400), as everywhere in the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from cds_service.api.deps import StateDep, base_url
from cds_service.api.errors import FHIR_JSON
from cds_service.api.openapi_docs import error_response
from cds_service.artefacts import searchset

router = APIRouter(prefix="/fhir", tags=["FHIR"])

UrlQuery = Annotated[str | None, Query(alias="url", description="Canonical URL (exact match).")]
NameQuery = Annotated[
    str | None,
    Query(
        alias="name", description="Computable name: starts with, any case (`name:exact`, `name:contains`)."
    ),
]
BAD_SEARCH = error_response("A search parameter, modifier or value that is not supported (it is named).")


class FhirJSON(Response):
    media_type = FHIR_JSON


def _schema(resource_type: str, description: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": [resource_type]}},
    }
    return {"description": description, "content": {FHIR_JSON: {"schema": schema}}}


def _json(resource: Mapping[str, Any]) -> Response:
    return FhirJSON(orjson.dumps(resource))


def _search(request: Request, state: StateDep, resource_type: str) -> Response:
    found, count_only = state.fhir.search(resource_type, request.query_params.multi_items())
    base = base_url(request, state.settings)
    query = f"?{request.url.query}" if request.url.query else ""
    return _json(
        searchset(resource_type, found, f"{base}/fhir", f"{base}{request.url.path}{query}", count_only)
    )


def _read(state: StateDep, resource_type: str, resource_id: str) -> Response:
    return FhirJSON(state.fhir.encoded(resource_type, resource_id))


SEARCH: dict[int | str, dict[str, Any]] = {
    200: _schema("Bundle", "A searchset Bundle, every match in one page."),
    400: BAD_SEARCH,
}


def _read_responses(resource_type: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: _schema(resource_type, f"The {resource_type}."),
        404: error_response(f"Unknown {resource_type} id."),
    }


@router.get(
    "/metadata",
    response_class=FhirJSON,
    responses={200: _schema("CapabilityStatement", "What this FHIR facade serves.")},
    summary="CapabilityStatement of the read-only FHIR facade",
    operation_id="fhir_metadata",
)
async def metadata(state: StateDep) -> Response:
    """Resource types, search parameters and the `$expand` operation served under `/fhir`."""
    return _json(state.fhir.capability)


@router.get(
    "/ValueSet",
    response_class=FhirJSON,
    responses=SEARCH,
    summary="Search value sets (url, name)",
    operation_id="fhir_search_valueset",
)
async def search_valuesets(
    request: Request, state: StateDep, _url: UrlQuery = None, _name: NameQuery = None
) -> Response:
    """Every value set the rules read (`compose` and `expansion`), filtered by `url`, `name`, `title`,
    `version` or `_id`; `_summary=count` for the number only."""
    return _search(request, state, "ValueSet")


@router.get(
    "/ValueSet/$expand",
    response_class=FhirJSON,
    responses={**_read_responses("ValueSet"), 400: BAD_SEARCH},
    summary="Expand a value set given by its canonical URL",
    operation_id="fhir_expand_valueset_by_url",
)
async def expand_by_url(request: Request, state: StateDep, _url: UrlQuery = None) -> Response:
    """The value set named by `url` (`url|version` accepted) with its precomputed expansion."""
    return _json(state.fhir.expand(request.query_params.multi_items()))


@router.get(
    "/ValueSet/{resource_id}",
    response_class=FhirJSON,
    responses=_read_responses("ValueSet"),
    summary="One value set: compose and expansion",
    operation_id="fhir_read_valueset",
)
async def read_valueset(resource_id: str, state: StateDep) -> Response:
    """Each system's codes, ICD-10-CM and ATC prefixes as `regex` filters, site codes marked local, and
    the expansion listing every explicit code."""
    return _read(state, "ValueSet", resource_id)


@router.get(
    "/ValueSet/{resource_id}/$expand",
    response_class=FhirJSON,
    responses={**_read_responses("ValueSet"), 400: BAD_SEARCH},
    summary="The expanded value set",
    operation_id="fhir_expand_valueset",
)
async def expand_valueset(resource_id: str, request: Request, state: StateDep) -> Response:
    """The value set with its expansion (`includeDefinition=true` keeps `compose`)."""
    return _json(state.fhir.expand(request.query_params.multi_items(), resource_id))


@router.get(
    "/PlanDefinition",
    response_class=FhirJSON,
    responses=SEARCH,
    summary="Search the CDS services as PlanDefinitions",
    operation_id="fhir_search_plandefinition",
)
async def search_plans(
    request: Request, state: StateDep, _url: UrlQuery = None, _name: NameQuery = None
) -> Response:
    """One eca-rule PlanDefinition per CDS service, one action per rule it evaluates."""
    return _search(request, state, "PlanDefinition")


@router.get(
    "/PlanDefinition/{resource_id}",
    response_class=FhirJSON,
    responses=_read_responses("PlanDefinition"),
    summary="One CDS service as a PlanDefinition (id = service id)",
    operation_id="fhir_read_plandefinition",
)
async def read_plan(resource_id: str, state: StateDep) -> Response:
    """The service's rules as actions: trigger, logic, condition, inputs, evidence, suggested orders."""
    return _read(state, "PlanDefinition", resource_id)


@router.get(
    "/ActivityDefinition",
    response_class=FhirJSON,
    responses=SEARCH,
    summary="Search the orders cards suggest",
    operation_id="fhir_search_activitydefinition",
)
async def search_activities(
    request: Request, state: StateDep, _url: UrlQuery = None, _name: NameQuery = None
) -> Response:
    """One ActivityDefinition (a draft ServiceRequest) per order a card can suggest."""
    return _search(request, state, "ActivityDefinition")


@router.get(
    "/ActivityDefinition/{resource_id}",
    response_class=FhirJSON,
    responses=_read_responses("ActivityDefinition"),
    summary="One order a card can suggest (id = order id)",
    operation_id="fhir_read_activitydefinition",
)
async def read_activity(resource_id: str, state: StateDep) -> Response:
    """The order's codes and priority, as the card's suggestion creates it."""
    return _read(state, "ActivityDefinition", resource_id)
