"""GET /cds-services: CDS Hooks 2.0.1 discovery."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.api.jsonrules import assert_no_empty_members


def test_lists_every_service_with_required_members(client: TestClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    assert {s["id"]: s["hook"] for s in services} == {
        "hip-weakness": "patient-view",
        "hip-weakness-order-select": "order-select",
        "hip-weakness-order-sign": "order-sign",
    }
    for service in services:
        for member in ("hook", "id", "title", "description", "prefetch", "usageRequirements"):
            assert service[member], member
        assert service["version"] == "2.0.1"
    assert_no_empty_members(response.json())


def test_exactly_one_patient_view_service(client: TestClient) -> None:
    hooks = [s["hook"] for s in client.get("/cds-services").json()["services"]]
    assert hooks.count("patient-view") == 1


def test_prefetch_templates_use_only_2_0_1_tokens_and_the_query_subset(client: TestClient) -> None:
    allowed_tokens = {
        "context.patientId",
        "context.encounterId",
        "context.userId",
        "userPractitionerId",
        "userPractitionerRoleId",
        "userPatientId",
        "userRelatedPersonId",
    }
    allowed_params = {
        "patient",
        "subject",
        "code",
        "category",
        "date",
        "status",
        "clinical-status",
        "_count",
        "_sort",
        "encounter",
    }
    for service in client.get("/cds-services").json()["services"]:
        for template in service["prefetch"].values():
            assert set(re.findall(r"\{\{\s*([^}\s]+)\s*\}\}", template)) <= allowed_tokens, template
            path, _, query = template.partition("?")
            assert re.fullmatch(r"[A-Z][A-Za-z]+(/\{\{context\.\w+\}\})?", path), template
            params = {p.split("=")[0].split(":")[0] for p in query.split("&") if p}
            assert params <= allowed_params, template


def test_cors_preflight_allows_authorization_and_content_type(client: TestClient) -> None:
    response = client.options(
        "/cds-services/hip-weakness",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://sandbox.cds-hooks.org")
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_header_on_simple_get(client: TestClient) -> None:
    response = client.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.headers["access-control-allow-origin"] in ("*", "https://sandbox.cds-hooks.org")
