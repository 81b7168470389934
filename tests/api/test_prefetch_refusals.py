"""A server that refuses a query, data that arrives under two keys, and data that arrives only in part:
the profile's fallbacks, one use per resource, and cards that say what could not be checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.fixtures import searchset
from cds_service.main import create_app
from cds_service.tools import local_search
from cds_service.tools.local_search import default_templates
from tests.conftest import make_settings
from tests.support import FHIR_BASE, SERVICE, bundle_resources, categories, hook_request, vignette_bundle

URL = f"/cds-services/{SERVICE}"
PATIENT = "hw-v01"
TOKEN = "refusals-token"
REFUSED = {
    "resourceType": "OperationOutcome",
    "issue": [
        {"severity": "fatal", "code": "required", "diagnostics": "Both patient and code or category..."}
    ],
}


def v01() -> list[dict[str, Any]]:
    return bundle_resources(vignette_bundle("V01"))


@pytest.fixture
def fhir() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=FHIR_BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def strict_server(fhir: respx.MockRouter, resources: list[dict[str, Any]], refuse: str) -> list[str]:
    """A faithful server that answers 400 to any Observation search whose query contains ``refuse``;
    returns the queries it was sent."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        relative = f"{request.url.path.rsplit('/', 1)[-1]}?{request.url.query.decode()}"
        seen.append(relative)
        if relative.startswith("Observation?") and refuse in relative:
            return httpx.Response(400, json=REFUSED)
        found = local_search.run(relative, resources)
        assert isinstance(found, list)
        return httpx.Response(200, json=searchset(found))

    fhir.get(url__regex=r"/(Condition|Observation|MedicationRequest|MedicationStatement)\?").mock(
        side_effect=answer
    )
    fhir.get(f"/Patient/{PATIENT}").respond(json=resources[0])
    return seen


def test_a_refused_category_search_falls_back_to_one_query_per_category(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    seen = strict_server(fhir, v01(), refuse="category=exam,survey")
    response = client.post(URL, json=hook_request(None, PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    assert response.status_code == 200
    assert categories(response.json()) == ["urgent-referral"]
    asked = [q.split("&_count")[0] for q in seen if "category=" in q]
    assert asked[1:] == [f"Observation?patient={PATIENT}&category={c}" for c in ("exam", "survey")]
    assert "could not be obtained" not in response.text


def test_a_refused_code_search_falls_back_to_the_unfiltered_search_on_a_generic_server(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    seen = strict_server(fhir, v01(), refuse="code=")
    response = client.post(URL, json=hook_request(None, PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    assert response.status_code == 200
    assert f"Observation?patient={PATIENT}&_count=500" in seen
    assert "could not be obtained" not in response.text


def test_on_epic_a_refused_code_search_has_no_unfiltered_fallback_and_the_412_says_what_is_missing(
    tmp_path: Path, fhir: respx.MockRouter
) -> None:
    resources = [r for r in v01() if r["resourceType"] != "Condition"]  # only Observations show weakness
    seen = strict_server(fhir, resources, refuse="code=")
    app = create_app(make_settings(tmp_path, ehr_profile="epic"))
    with TestClient(app) as c:
        response = c.post(URL, json=hook_request(None, PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    assert not any(q.startswith(f"Observation?patient={PATIENT}&_count") for q in seen)
    assert response.status_code == 412
    issues = {i["expression"][0]: i["diagnostics"] for i in response.json()["issue"]}
    assert set(issues) == {f"prefetch.observationCodes{i}" for i in range(1, 7)}
    assert all("refused" in d and "Observations with one of" in d for d in issues.values())


def test_what_arrived_shows_hip_weakness_and_a_red_flag_so_the_card_says_what_could_not_be_checked(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    """Issue 12 §6: the Condition search fails, the Observations show hip weakness, the red flag in
    them is shown, and the highest card names the missing data; nothing is answered as 'no card'."""
    fhir.get("/Condition", params__contains={"patient": PATIENT}).respond(503)  # before the server's routes
    strict_server(fhir, v01(), refuse="never")
    response = client.post(URL, json=hook_request(None, PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    assert response.status_code == 200
    [card] = response.json()["cards"]
    assert card["indicator"] == "critical"
    assert "Prefetch 'conditions' could not be obtained: FHIR server answered HTTP 503" in card["detail"]
    assert "It holds every Condition of the patient." in card["detail"]


def test_a_resource_under_two_keys_is_used_once(client: TestClient) -> None:
    """An exam Observation that also matches a code search: evidence and counts have it once."""
    body = hook_request(v01(), PATIENT)
    mrc = [r for r in v01() if r["resourceType"] == "Observation"]
    body["prefetch"]["observations"] = searchset(mrc)  # as if filed under the exam category too
    assert all(
        r in body["prefetch"]["observationCodes1"]["entry"]
        for r in [{"resource": m, "search": {"mode": "match"}} for m in mrc]
    )
    response = client.post(URL, json=body)
    detail = response.json()["cards"][0]["detail"]
    assert detail.count("Hip flexion strength, MRC grade = 3 (Observation local hip-flexion-mrc, right") == 1


def test_every_template_key_is_in_discovery_for_the_configured_profile(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, ehr_profile="epic"))) as c:
        services = {s["id"]: s for s in c.get("/cds-services").json()["services"]}
    prefetch = services[SERVICE]["prefetch"]
    assert "medicationStatements" not in prefetch
    assert prefetch["conditions"].endswith("clinical-status=active,inactive,resolved")
    assert prefetch.keys() != default_templates().keys()
