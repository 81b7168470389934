"""Shared by the tool tests: a HAPI-shaped FHIR server (respx) and CLI runs in-process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx

from cds_service import cli
from cds_service.fixtures import ANCHOR, searchset, shift_dates
from tests.support import bundle_resources, vignette_bundle

HAPI_BASE = "http://hapi.fhir.org/baseR4"
HAPI_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hapi"
TOKEN = "eyJhbGciOi.tool-test-token.sig"


def hapi(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HAPI_FIXTURES / name).read_text())
    return data


def todays_resources(case: str) -> list[dict[str, Any]]:
    """A vignette moved to today (the in-process service runs on the real clock)."""
    days = (datetime.now(UTC).date() - ANCHOR).days
    resources: list[dict[str, Any]] = shift_dates(bundle_resources(vignette_bundle(case)), days)
    return resources


def of_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


def serve_patient(
    router: respx.MockRouter,
    resources: list[dict[str, Any]],
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Routes for the patient's read and searches; ``overrides``: resource type -> respx response kwargs."""
    patient = of_type(resources, "Patient")[0]
    pid = str(patient["id"])
    router.get(f"/Patient/{pid}").respond(json=patient)
    for rtype in ("Condition", "Observation", "MedicationRequest", "MedicationStatement"):
        answer = (overrides or {}).get(rtype) or {"json": searchset(of_type(resources, rtype))}
        router.get(f"/{rtype}", params__contains={"patient": pid}).respond(**answer)
    return pid


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
