"""POST /cds-services/{id}, by contract case (CDS Hooks 2.0.1 §Calling a CDS Service, §HTTP Response)."""

from __future__ import annotations

import json
import uuid

import pytest
import respx
from fastapi.testclient import TestClient

from tests.api.jsonrules import assert_no_empty_members
from tests.support import (
    FHIR_BASE,
    SERVICE,
    bundle_resources,
    categories,
    hook_request,
    vignette_bundle,
)

URL = f"/cds-services/{SERVICE}"


def v01() -> dict:
    return hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01")


def assert_outcome(response, status: int, expression: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["severity"] in ("error", "fatal") for i in body["issue"])
    assert "Traceback" not in response.text
    if expression is not None:
        assert any(expression in i.get("expression", []) for i in body["issue"]), body
    return body


# -- unknown service / malformed body -----------------------------------------------------------------


def test_unknown_service_is_404_operation_outcome(client: TestClient) -> None:
    body = assert_outcome(client.post("/cds-services/nope", json=v01()), 404)
    assert "nope" in body["issue"][0]["diagnostics"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        URL, content=b'{"hook": "patient-view",', headers={"content-type": "application/json"}
    )
    assert_outcome(response, 400)


def test_json_that_is_not_an_object_is_400(client: TestClient) -> None:
    assert_outcome(client.post(URL, json=[v01()]), 400)


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(URL, content=json.dumps(v01()), headers={"content-type": "text/plain"})
    assert_outcome(response, 415)


def test_body_over_the_limit_is_413(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    from cds_service.main import create_app

    small = settings.model_copy(update={"max_request_bytes": 2048})
    with TestClient(create_app(small)) as c:
        assert_outcome(c.post(URL, json=v01()), 413)


@pytest.mark.parametrize("member", ["hook", "hookInstance", "context"])
def test_missing_required_member_is_400_naming_it(client: TestClient, member: str) -> None:
    body = v01()
    del body[member]
    assert_outcome(client.post(URL, json=body), 400, member)


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("hook", 5),
        ("hookInstance", ""),
        ("context", "patient"),
        ("prefetch", []),
        ("fhirServer", "not a url"),
        ("extension", "x"),
    ],
)
def test_wrong_type_in_envelope_is_400_naming_it(client: TestClient, member: str, value: object) -> None:
    body = v01()
    body[member] = value
    assert_outcome(client.post(URL, json=body), 400, member)


def test_hook_that_does_not_match_the_service_is_400(client: TestClient) -> None:
    body = v01()
    body["hook"] = "order-sign"
    diagnostics = assert_outcome(client.post(URL, json=body), 400, "hook")["issue"][0]["diagnostics"]
    assert "patient-view" in diagnostics


@pytest.mark.parametrize("field", ["patientId", "userId"])
def test_missing_required_context_is_400(client: TestClient, field: str) -> None:
    body = v01()
    del body["context"][field]
    assert_outcome(client.post(URL, json=body), 400, f"context.{field}")


def test_fhir_authorization_without_fhir_server_is_400(client: TestClient) -> None:
    body = v01()
    body["fhirAuthorization"] = {
        "access_token": "secret-token-123",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds",
    }
    response = client.post(URL, json=body)
    assert_outcome(response, 400)
    assert "secret-token-123" not in response.text


def test_unknown_extension_members_are_accepted_and_ignored(client: TestClient) -> None:
    body = v01()
    body["extension"] = {"com.epic.cdshooks.request.bpa-trigger-action": "60", "com.example.x": {"deep": [1]}}
    body["unknownTopLevel"] = True
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert categories(response.json()) == categories(client.post(URL, json=v01()).json())


# -- full prefetch ------------------------------------------------------------------------------------


@respx.mock(assert_all_mocked=True)
def test_full_prefetch_answers_without_calling_the_fhir_server(client: TestClient) -> None:
    route = respx.get(url__startswith=FHIR_BASE)
    body = hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01", fhir_server=FHIR_BASE, token="t")
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert not route.called
    data = response.json()
    assert categories(data) == ["urgent-referral"]
    assert_no_empty_members(data)


def test_card_shape_follows_the_spec(client: TestClient) -> None:
    card = client.post(URL, json=v01()).json()["cards"][0]
    uuid.UUID(card["uuid"])
    assert len(card["summary"]) < 140
    assert card["indicator"] == "critical"
    assert card["source"]["topic"] == {
        "system": "http://example.org/fhir/CodeSystem/hip-weakness-cds-category",
        "code": "urgent-referral",
        "display": "Urgent referral (same-day emergency assessment)",
    }
    assert card["source"]["url"].startswith("https://")
    assert card["selectionBehavior"] == "any"
    for suggestion in card["suggestions"]:
        uuid.UUID(suggestion["uuid"])
        assert len(suggestion["actions"]) == 1
        action = suggestion["actions"][0]
        assert action["type"] == "create" and action["resource"]["resourceType"] == "ServiceRequest"
        assert action["resource"]["subject"] == {"reference": "Patient/hw-v01"}
    assert all(reason["display"] for reason in card["overrideReasons"])
    assert all(link["type"] == "absolute" and "appContext" not in link for link in card["links"])
    assert "bladder, bowel, saddle" in card["detail"]


def test_no_hip_weakness_gives_exactly_empty_cards(client: TestClient) -> None:
    response = client.post(URL, json=hook_request(bundle_resources(vignette_bundle("V46")), "hw-v46"))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_spec_example_request_is_accepted(client: TestClient) -> None:
    """The CDS Hooks 2.0.1 example request (its prefetch key is not ours: fetched or reported, never 500)."""
    body = json.loads(
        '{"hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea","hook":"patient-view",'
        '"context":{"userId":"Practitioner/example","patientId":"1288992","encounterId":"89284"},'
        '"prefetch":{"patientToGreet":{"resourceType":"Patient","gender":"male","birthDate":"1925-12-23",'
        '"id":"1288992","active":true}}}'
    )
    response = client.post(URL, json=body)
    assert response.status_code == 412  # no fhirServer and our required keys are absent: the spec's 412
    assert_outcome(response, 412, "prefetch.conditions")


def test_repeated_hook_instance_is_answered_again(client: TestClient) -> None:
    first = client.post(URL, json=v01()).json()
    second = client.post(URL, json=v01()).json()
    assert categories(first) == categories(second)
