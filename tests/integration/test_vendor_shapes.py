"""Patients in Epic's and Oracle Health's published shapes (fhir_fixtures/vendors/), from a real FHIR
server behind a proxy as strict as Epic, on both paths: flowsheet Observations whose only codes are the
site's own (reaching the rules through a site value-set file), problem-list and encounter-diagnosis
Conditions, and drugs behind a medicationReference (a separate Medication, or a contained one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.main import create_app
from cds_service.prefetch import render
from tests.conftest import make_settings
from tests.integration.conftest import FirstLoad
from tests.integration.sekmet_server import SekmetServer
from tests.integration.strict_fhir import Mode, StrictFhir, strict_fhir
from tests.support import FIXTURES, categories, hook_request

VENDORS = FIXTURES / "vendors"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VENDORS / "expected.json").read_text())["cases"]
SITE = FIXTURES / "site-valuesets" / "epic-example"


@pytest.fixture(scope="module")
def epic(sekmet: SekmetServer, loaded: FirstLoad) -> Iterator[StrictFhir]:
    with strict_fhir(sekmet.base_url, "epic") as proxy:
        yield proxy


def service(tmp_path: Path, profile: Mode | str, site: Path | None) -> TestClient:
    settings = make_settings(
        tmp_path, ehr_profile=profile, extra_valuesets_dir=site, fhir_time_budget_seconds=30
    )
    return TestClient(create_app(settings))


def call(client: TestClient, ehr: StrictFhir, token: str, patient: str, *, prefetch: bool) -> httpx.Response:
    """The service fetches everything itself, or the EHR runs every template first (first pages)."""
    supplied = None
    if prefetch:
        templates = client.get("/cds-services").json()["services"][0]["prefetch"]
        context = {"patientId": patient}
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as http:
            supplied = {k: http.get(f"{ehr.base}/{render(t, context)}").json() for k, t in templates.items()}
    body = hook_request(None, patient, prefetch=supplied, fhir_server=ehr.base, token=token)
    return client.post("/cds-services/hip-weakness", json=body)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("prefetch", [True, False], ids=["ehr-prefetch", "service-fetch"])
def test_vendor_shaped_patient_through_the_epic_profile(
    name: str, prefetch: bool, epic: StrictFhir, fhir_token: str, tmp_path: Path
) -> None:
    case = EXPECTED[name]
    with service(tmp_path, "epic", SITE) as client:
        response = call(client, epic, fhir_token, case["patient"], prefetch=prefetch)
    assert response.status_code == 200, response.text
    got = categories(response.json())
    assert set(case.get("must", [])) <= set(got), got
    assert not set(case.get("mustNot", [])) & set(got), got
    if "indicator" in case:
        assert response.json()["cards"][0]["indicator"] == case["indicator"]
    assert "could not be obtained" not in response.text  # every key the profile asks for is served


def test_the_apixaban_behind_a_reference_is_read_and_the_contained_aspirin_is_not_an_anticoagulant(
    epic: StrictFhir, fhir_token: str, tmp_path: Path
) -> None:
    with service(tmp_path, "epic", SITE) as client:
        detail = call(client, epic, fhir_token, "hw-epic-anticoagulated", prefetch=False).json()["cards"][0][
            "detail"
        ]
    assert "Anticoagulant on board" in detail and "apixaban" in detail.lower()
    assert "aspirin" not in detail.lower()


def test_without_the_sites_flowsheet_mapping_the_local_row_is_not_read(
    epic: StrictFhir, fhir_token: str, tmp_path: Path
) -> None:
    """The flowsheet row carries only Epic's own codes: until the site maps it, the weakness it records
    is invisible to the rules (the README shows the mapping)."""
    with service(tmp_path, "epic", None) as client:
        response = call(client, epic, fhir_token, "hw-epic-anticoagulated", prefetch=False)
    assert response.status_code == 200
    assert response.json()["cards"] == []


def test_the_oracle_profile_reads_oracle_shaped_data(
    sekmet: SekmetServer, loaded: FirstLoad, fhir_token: str, tmp_path: Path
) -> None:
    with strict_fhir(sekmet.base_url, "generic") as oracle, service(tmp_path, "oracle", None) as client:
        for prefetch in (True, False):
            response = call(client, oracle, fhir_token, "hw-oracle-hip-oa", prefetch=prefetch)
            assert response.status_code == 200, response.text
            assert categories(response.json()) == ["physiotherapy"]
            assert "could not be obtained" not in response.text
