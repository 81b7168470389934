"""Prefetch ladder against a mocked FHIR server (respx): present, null, OperationOutcome, paging, missing
(fetched with the bearer token), 412, and every FHIR error. HAPI-shaped bodies from tests/fixtures/hapi/."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.fixtures import searchset
from cds_service.tools import local_search
from cds_service.tools.local_search import default_templates
from tests.support import FHIR_BASE, SERVICE, bundle_resources, categories, hook_request, vignette_bundle

URL = f"/cds-services/{SERVICE}"
PLANS = default_templates()
REQUIRED = {"conditions", *(k for k in PLANS if k.startswith("observation"))}
HAPI = Path(__file__).resolve().parent.parent / "fixtures" / "hapi"
TOKEN = "eyJhbGciOi.secret-fhir-access-token.sig"
PATIENT = "hw-v01"


def hapi(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HAPI / name).read_text())
    return data


def v01_resources() -> list[dict[str, Any]]:
    return bundle_resources(vignette_bundle("V01"))


def by_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


@pytest.fixture
def fhir() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=FHIR_BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def serve_patient(fhir: respx.MockRouter, resources: list[dict[str, Any]], patient: str = PATIENT) -> None:
    """A FHIR server holding this patient: reads and searches answered as FHIR defines them
    (``tools.local_search``: code and category filters honoured, not ignored)."""
    fhir.get(f"/Patient/{patient}").respond(json=by_type(resources, "Patient")[0])
    for rtype in ("Condition", "Observation", "MedicationRequest", "MedicationStatement"):
        fhir.get(f"/{rtype}", params__contains={"patient": patient}).mock(side_effect=searcher(resources))


def searcher(resources: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    def search(request: httpx.Request) -> httpx.Response:
        relative = f"{request.url.path.rsplit('/', 1)[-1]}?{request.url.query.decode()}"
        found = local_search.run(relative, resources)
        assert isinstance(found, list)
        return httpx.Response(200, json=searchset(found))

    return search


def without_weakness(body: dict[str, Any]) -> dict[str, Any]:
    """The request with every Observation key empty: the Conditions alone must then establish hip
    weakness, so a Condition search that fails leaves nothing to show it (412)."""
    for key in PLANS:
        if key.startswith("observation"):
            body["prefetch"][key] = searchset([])
    return body


def fetch_request(**kwargs: Any) -> dict[str, Any]:
    return hook_request(None, PATIENT, fhir_server=FHIR_BASE, **kwargs)


# -- missing prefetch: fetched ---------------------------------------------------------------------------


def test_missing_prefetch_is_fetched_with_the_bearer_token(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    serve_patient(fhir, v01_resources())
    response = client.post(URL, json=fetch_request(token=TOKEN))
    assert response.status_code == 200
    assert categories(response.json()) == ["urgent-referral"]
    assert len(fhir.calls) == len(PLANS)
    for call in fhir.calls:
        assert call.request.headers["authorization"] == f"Bearer {TOKEN}"
        assert call.request.headers["accept"] == "application/fhir+json"
    searched = {c.request.url.path: dict(c.request.url.params) for c in fhir.calls}
    assert searched["/fhir/Condition"] == {"patient": PATIENT, "_count": "500"}


def test_without_fhir_authorization_fetches_without_token_when_allowed(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    serve_patient(fhir, v01_resources())
    response = client.post(URL, json=fetch_request())
    assert response.status_code == 200
    assert all("authorization" not in c.request.headers for c in fhir.calls)


def test_without_fhir_authorization_and_unauthenticated_access_disabled_is_412(
    tmp_path: Path, fhir: respx.MockRouter
) -> None:
    from cds_service.main import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(tmp_path, allow_unauthenticated_fhir=False))
    with TestClient(app) as c:
        response = c.post(URL, json=fetch_request())
    assert response.status_code == 412
    assert "unauthenticated FHIR access is disabled" in response.text
    assert not fhir.calls


def test_missing_prefetch_without_fhir_server_is_412_naming_the_keys(client: TestClient) -> None:
    response = client.post(URL, json=hook_request(None, PATIENT))
    assert response.status_code == 412
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert {e for i in body["issue"] for e in i["expression"]} == {f"prefetch.{k}" for k in REQUIRED}
    assert all(i["code"] == "incomplete" for i in body["issue"])


def test_only_the_missing_keys_are_fetched(client: TestClient, fhir: respx.MockRouter) -> None:
    resources = v01_resources()
    serve_patient(fhir, resources)
    body = hook_request(resources, PATIENT, fhir_server=FHIR_BASE, token=TOKEN)
    del body["prefetch"]["observations"]
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert [c.request.url.path for c in fhir.calls] == ["/fhir/Observation"]


# -- null and OperationOutcome ---------------------------------------------------------------------------


def test_null_prefetch_means_no_data_and_is_not_refetched(client: TestClient, fhir: respx.MockRouter) -> None:
    body = hook_request(v01_resources(), PATIENT, fhir_server=FHIR_BASE, token=TOKEN)
    for key in ("patient", "medicationRequests", "medicationStatements", "observations"):
        body["prefetch"][key] = None
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert not fhir.calls
    assert categories(response.json()) == ["urgent-referral"]


def test_bare_operation_outcome_is_refetched_from_the_server(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    resources = v01_resources()
    serve_patient(fhir, resources)
    body = hook_request(resources, PATIENT, fhir_server=FHIR_BASE, token=TOKEN)
    body["prefetch"]["conditions"] = hapi("hapi-oo-404-not-known.json")
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert [c.request.url.path for c in fhir.calls] == ["/fhir/Condition"]
    assert categories(response.json()) == ["urgent-referral"]


def test_operation_outcome_without_server_access_is_412(client: TestClient) -> None:
    body = without_weakness(hook_request(v01_resources(), PATIENT))
    body["prefetch"]["conditions"] = hapi("hapi-oo-410-gone.json")
    response = client.post(URL, json=body)
    assert response.status_code == 412
    assert "EHR could not obtain it" in response.json()["issue"][0]["diagnostics"]


def test_operation_outcome_entry_with_error_severity_counts_as_not_obtained(client: TestClient) -> None:
    body = without_weakness(hook_request(v01_resources(), PATIENT))
    body["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": hapi("hapi-oo-404-not-known.json"), "search": {"mode": "outcome"}}],
    }
    assert client.post(URL, json=body).status_code == 412


def test_epic_no_results_outcome_entry_is_data_not_an_error(client: TestClient) -> None:
    body = hook_request(v01_resources(), PATIENT)
    body["prefetch"]["medicationRequests"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
        "entry": [
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "information",
                            "code": "informational",
                            "details": {
                                "coding": [{"code": "4101"}],
                                "text": "Resource request returns no results.",
                            },
                        }
                    ],
                },
                "search": {"mode": "outcome"},
            }
        ],
    }
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert categories(response.json()) == ["urgent-referral"]


# -- paging ---------------------------------------------------------------------------------------------


def test_paged_prefetch_is_followed_and_a_red_flag_on_page_two_is_found(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    resources = bundle_resources(vignette_bundle("V51"))  # prostate cancer history: RF-CA
    patient = "hw-v51"
    conditions = by_type(resources, "Condition")
    cancer = [c for c in conditions if c["code"]["coding"][0]["code"] == "Z85.46"]
    others = [c for c in conditions if c not in cancer]
    page1 = searchset(others)
    next_url = f"{FHIR_BASE}?_getpages=abc&_getpagesoffset=20&_count=20&_bundletype=searchset"
    page1["link"] = [{"relation": "next", "url": next_url}]
    fhir.get(f"{FHIR_BASE}", params__contains={"_getpages": "abc"}).respond(json=searchset(cancer))
    body = hook_request(resources, patient, fhir_server=FHIR_BASE, token=TOKEN)
    body["prefetch"]["conditions"] = page1
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert fhir.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"
    assert categories(response.json())[0] == "urgent-referral"
    assert "RF-CA" in response.text


def test_hapi_paging_with_getpages_links(client: TestClient, fhir: respx.MockRouter) -> None:
    hapi_base = "http://hapi.fhir.org/baseR4"
    with respx.mock(base_url=hapi_base, assert_all_mocked=True) as server:
        server.get("/Observation", params__contains={"patient": PATIENT}).respond(
            json=hapi("hapi-searchset-page1.json")
        )
        server.get("", params__contains={"_getpages": "0ee3ca41-d46d-40de-9a86-64c3c402540d"}).respond(
            json=hapi("hapi-searchset-lastpage.json")
        )
        body = hook_request(v01_resources(), PATIENT, fhir_server=hapi_base, token=TOKEN)
        del body["prefetch"]["observations"]  # the category search; the code searches were supplied
        response = client.post(URL, json=body)
        assert response.status_code == 200
        assert len(server.calls) == 2


def test_paging_loop_fails_the_key(client: TestClient, fhir: respx.MockRouter) -> None:
    looping = searchset([])
    looping["link"] = [{"relation": "next", "url": f"{FHIR_BASE}/Condition?patient={PATIENT}&page=2"}]
    fhir.get("/Condition", params__contains={"page": "2"}).respond(json=looping)
    body = without_weakness(hook_request(v01_resources(), PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    body["prefetch"]["conditions"] = looping
    response = client.post(URL, json=body)
    assert response.status_code == 412
    assert "paging loop" in response.text


def test_next_link_to_another_server_is_not_followed(client: TestClient, fhir: respx.MockRouter) -> None:
    page = searchset([])
    page["link"] = [{"relation": "next", "url": "https://attacker.example.com/steal"}]
    body = without_weakness(hook_request(v01_resources(), PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    body["prefetch"]["conditions"] = page
    response = client.post(URL, json=body)
    assert response.status_code == 412
    assert not fhir.calls


def test_paged_prefetch_without_server_access_is_412(client: TestClient) -> None:
    page = searchset([])
    page["link"] = [{"relation": "next", "url": f"{FHIR_BASE}/Condition?page=2"}]
    body = without_weakness(hook_request(v01_resources(), PATIENT))
    body["prefetch"]["conditions"] = page
    assert client.post(URL, json=body).status_code == 412


# -- FHIR server errors -----------------------------------------------------------------------------------

ERRORS = [
    (httpx.Response(401), "HTTP 401"),
    (httpx.Response(403), "HTTP 403"),
    (httpx.Response(404, json=hapi("hapi-oo-404-not-known.json")), "HAPI-2001"),
    (httpx.Response(404, json=hapi("hapi-oo-404-unknown-type.json")), "HAPI-0302"),
    (httpx.Response(410, json=hapi("hapi-oo-410-gone.json")), "HTTP 410"),
    (httpx.Response(400, json=hapi("hapi-oo-400-unknown-search-param.json")), "HAPI-0524"),
    (httpx.Response(400, json=hapi("hapi-oo-400-bad-json.json")), "HAPI-0450"),
    (httpx.Response(429), "HTTP 429"),
    (httpx.Response(500), "HTTP 500"),
    (httpx.Response(503, text="<html>down</html>"), "HTTP 503"),
    (httpx.Response(200, text="{not json"), "malformed JSON"),
    (httpx.Response(200, json={"hello": "world"}), "not a FHIR resource"),
    (httpx.Response(200, json={"resourceType": "Patient", "id": "x"}), "expected a Bundle"),
    (httpx.ConnectError("refused"), "unreachable"),
    (httpx.ReadTimeout("slow"), "timed out"),
]


@pytest.mark.parametrize(("answer", "said"), ERRORS, ids=[s for _, s in ERRORS])
def test_fhir_error_on_a_required_key_is_412_with_the_servers_diagnostics(
    client: TestClient, fhir: respx.MockRouter, answer: httpx.Response | Exception, said: str
) -> None:
    resources = v01_resources()
    serve_patient(fhir, resources)
    route = fhir.get("/Condition", params__contains={"patient": PATIENT})
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    body = without_weakness(hook_request(resources, PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    del body["prefetch"]["conditions"]
    response = client.post(URL, json=body)
    assert response.status_code == 412
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["prefetch.conditions"]
    assert said in issue["diagnostics"]
    assert TOKEN not in response.text


def conditions_answering(fhir: respx.MockRouter, *answers: httpx.Response | Exception) -> respx.Route:
    """The V01 patient's server, whose Condition search gives ``answers`` in turn (then the data)."""
    resources = v01_resources()
    serve_patient(fhir, resources)
    route = fhir.get("/Condition", params__contains={"patient": PATIENT})
    route.side_effect = [*answers, searcher(resources)(httpx.Request("GET", f"{FHIR_BASE}/Condition"))]
    return route


@pytest.mark.parametrize("dropped", [httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError])
def test_a_connection_dropped_under_a_get_is_sent_once_more(
    client: TestClient, fhir: respx.MockRouter, dropped: type[httpx.TransportError]
) -> None:
    """A pooled keep-alive connection the server closed as it was reused: the GET is repeated once."""
    route = conditions_answering(fhir, dropped("connection closed"))
    body = without_weakness(hook_request(v01_resources(), PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    del body["prefetch"]["conditions"]
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    assert categories(response.json()) == ["urgent-referral"]
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("failure", "calls"),
    [(httpx.ReadError("reset"), 2), (httpx.ConnectError("refused"), 1), (httpx.ReadTimeout("slow"), 1)],
    ids=["dropped twice", "refused", "timed out"],
)
def test_a_get_is_repeated_at_most_once_and_never_after_a_refusal_or_a_timeout(
    client: TestClient, fhir: respx.MockRouter, failure: Exception, calls: int
) -> None:
    route = conditions_answering(fhir, failure, failure)
    body = without_weakness(hook_request(v01_resources(), PATIENT, fhir_server=FHIR_BASE, token=TOKEN))
    del body["prefetch"]["conditions"]
    assert client.post(URL, json=body).status_code == 412
    assert route.call_count == calls


def test_fhir_error_on_an_optional_key_is_reported_on_the_card(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    resources = v01_resources()
    fhir.get("/MedicationRequest", params__contains={"patient": PATIENT}).respond(500)
    body = hook_request(resources, PATIENT, fhir_server=FHIR_BASE, token=TOKEN)
    del body["prefetch"]["medicationRequests"]
    response = client.post(URL, json=body)
    assert response.status_code == 200
    detail = response.json()["cards"][0]["detail"]
    assert "medicationRequests" in detail and "could not be obtained" in detail


def test_resources_about_another_patient_are_ignored(client: TestClient, fhir: respx.MockRouter) -> None:
    """A lenient server that ignores the patient parameter must not give us someone else's red flag."""
    theirs = bundle_resources(vignette_bundle("V13"))  # metastatic cancer, patient hw-v13
    ours = bundle_resources(vignette_bundle("V33"))  # hip OA: physiotherapy only
    body = hook_request(ours, "hw-v33")
    body["prefetch"]["conditions"]["entry"] += [{"resource": r} for r in by_type(theirs, "Condition")]
    response = client.post(URL, json=body)
    assert categories(response.json()) == ["physiotherapy"]


def test_access_token_never_reaches_logs(
    client: TestClient, fhir: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    serve_patient(fhir, v01_resources())
    fhir.get("/Condition", params__contains={"patient": PATIENT}).respond(401)
    client.post(URL, json=fetch_request(token=TOKEN))
    assert caplog.records
    assert TOKEN not in caplog.text
    assert PATIENT not in caplog.text


def test_referenced_medication_is_read_from_the_server(client: TestClient, fhir: respx.MockRouter) -> None:
    """Apixaban behind a medicationReference: the service reads Medication/x and finds the red flag."""
    resources = bundle_resources(vignette_bundle("V39"))  # hip strain: physiotherapy only
    patient = "hw-v39"
    request = {
        "resourceType": "MedicationRequest",
        "id": "rx1",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/apx"},
        "subject": {"reference": f"Patient/{patient}"},
    }
    fhir.get("/Medication/apx").respond(
        json={
            "resourceType": "Medication",
            "id": "apx",
            "code": {
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1364445"}]
            },
        }
    )
    body = hook_request(resources, patient, fhir_server=FHIR_BASE, token=TOKEN)
    body["prefetch"]["medicationRequests"] = searchset([request])
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert categories(response.json())[0] == "urgent-referral"
    assert fhir.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"


def test_unreadable_medication_reference_is_reported_not_fatal(
    client: TestClient, fhir: respx.MockRouter
) -> None:
    resources = bundle_resources(vignette_bundle("V39"))
    request = {
        "resourceType": "MedicationRequest",
        "id": "rx1",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/gone"},
        "subject": {"reference": "Patient/hw-v39"},
    }
    fhir.get("/Medication/gone").respond(404, json=hapi("hapi-oo-404-not-known.json"))
    body = hook_request(resources, "hw-v39", fhir_server=FHIR_BASE, token=TOKEN)
    body["prefetch"]["medicationRequests"] = searchset([request])
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert categories(response.json()) == ["physiotherapy"]
    assert "medicationReference could not be resolved" in response.json()["cards"][0]["detail"]


def test_http_next_link_from_an_https_server_is_followed_over_https(client: TestClient) -> None:
    """HAPI behind a TLS proxy writes http:// next links: same host, followed over https only."""
    base = "https://hapi.example.org/baseR4"
    page = searchset([])
    page["link"] = [
        {"relation": "next", "url": "http://hapi.example.org/baseR4?_getpages=x&_getpagesoffset=20"}
    ]
    with respx.mock(assert_all_mocked=True) as server:
        route = server.get("https://hapi.example.org/baseR4", params__contains={"_getpages": "x"}).respond(
            json=searchset([])
        )
        body = hook_request(v01_resources(), PATIENT, fhir_server=base, token=TOKEN)
        body["prefetch"]["conditions"] = page
        assert client.post(URL, json=body).status_code == 200
        assert route.called
