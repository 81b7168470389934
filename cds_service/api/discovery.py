"""``GET /cds-services``: the service descriptors, generated from ``rules/services.yaml``."""

from __future__ import annotations

from fastapi import APIRouter

from cds_service.api.deps import OptionalCallerDep, StateDep
from cds_service.api.openapi_docs import error_response
from cds_service.schemas import DiscoveryResponse, ServiceDescriptor

router = APIRouter(tags=["CDS Hooks"])


@router.get(
    "/cds-services",
    response_model=DiscoveryResponse,
    response_model_exclude_none=True,
    responses={401: error_response("A bearer token was sent and it is not valid.")},
    summary="Discovery: the CDS services offered",
    operation_id="discovery",
)
async def discovery(state: StateDep, _caller: OptionalCallerDep) -> DiscoveryResponse:
    """CDS Hooks 2.0.1 discovery. A bearer JWT is verified when sent; discovery is public otherwise."""
    catalog = state.catalog
    return DiscoveryResponse(
        services=[
            ServiceDescriptor(
                hook=s.hook,
                id=s.id,
                title=s.title,
                description=s.description,
                prefetch=dict(s.prefetch),
                usageRequirements=s.usage_requirements,
                version=catalog.cds_hooks_version,
                hookVersion="1.0",
            )
            for s in catalog.services
        ]
    )
