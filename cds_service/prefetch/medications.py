"""Medications behind a reference: ``MedicationRequest.medicationReference`` -> ``Medication/<id>``.

Epic and HAPI return the reference, not the drug's code; an anticoagulant must not hide behind one. The
Medication resources the prefetch did not include are read (at most ``MAX_MEDICATION_READS``) within what
is left of the call's deadline; those not read stay unresolved and the engine reports them on the card.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.fhir.client import FhirClient
from cds_service.prefetch.fetch import FhirAccess, run_until

MAX_MEDICATION_READS = 20


async def fetch_referenced_medications(
    fhir: FhirClient, access: FhirAccess, resources: Iterable[Mapping[str, Any]], seconds: float
) -> list[dict[str, Any]]:
    """The referenced Medications that could be read in ``seconds``."""
    resources = list(resources)
    have = {r.get("id") for r in resources if r.get("resourceType") == "Medication"}
    wanted: list[str] = []
    for resource in resources:
        ref = resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, Mapping) else None
        if isinstance(target, str) and target.startswith("Medication/"):
            mid = target.removeprefix("Medication/").split("/")[0]
            if mid and mid not in have and mid not in wanted:
                wanted.append(mid)
    if not wanted or seconds <= 0 or access.base is None:
        return []
    base = access.base
    done = await run_until(
        [fhir.read(base, f"Medication/{mid}", access.token) for mid in wanted[:MAX_MEDICATION_READS]], seconds
    )
    found = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    return [m for m in found if m.get("resourceType") == "Medication"]
