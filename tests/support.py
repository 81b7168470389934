"""Helpers shared by tests: fixture loading and hook requests built the way an EHR builds them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from cds_service.fixtures import ANCHOR, case_patient_id, case_resources
from cds_service.tools.local_search import prefetch_for

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
NOW = datetime.combine(ANCHOR, time(12, 0), tzinfo=UTC)
SERVICE = "hip-weakness"
FHIR_BASE = "https://ehr.example.org/fhir"


def counter_ids(prefix: str = "id") -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(numbers):012d}"


def vignette_bundle(case_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "vignettes" / f"{case_id}.json").read_text())
    return data


def vignette_expectations() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "vignettes" / "expected.json").read_text())
    return data


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def hook_request(
    resources: Iterable[Mapping[str, Any]] | None,
    patient_id: str,
    *,
    hook: str = "patient-view",
    prefetch: Mapping[str, Any] | None = None,
    fhir_server: str | None = None,
    token: str | None = None,
    extra_context: Mapping[str, Any] | None = None,
    hook_instance: str = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hookInstance": hook_instance,
        "hook": hook,
        "context": {"userId": "Practitioner/example", "patientId": patient_id, **(extra_context or {})},
    }
    if prefetch is not None:
        body["prefetch"] = dict(prefetch)
    elif resources is not None:
        body["prefetch"] = prefetch_for(resources)
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "hip-weakness-cds",
        }
    return body


def case_request(case: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A patient-view request for a compact case (dates relative to the frozen NOW)."""
    return hook_request(case_resources(case, ANCHOR), case_patient_id(case), **kwargs)


def categories(response_json: Mapping[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response_json["cards"]]


def highest_indicator(response_json: Mapping[str, Any]) -> str:
    ranks = {"info": 0, "warning": 1, "critical": 2}
    indicators = [c["indicator"] for c in response_json["cards"]]
    return max(indicators, key=ranks.__getitem__) if indicators else "none"
