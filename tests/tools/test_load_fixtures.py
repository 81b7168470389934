"""``cds-service load-fixtures`` against a HAPI-shaped server (respx): what is sent, idempotence,
server-assigned ids, errors with the server's diagnostics, and servers without transactions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from tests.tools.support import HAPI_BASE, TOKEN, hapi, run_cli

CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [{"mode": "server", "interaction": [{"code": "transaction"}, {"code": "batch"}]}],
}


class HapiStore:
    """Answers transactions the way HAPI does: 201 for a new Type/id, 200 for an existing one."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.bundles: list[dict[str, Any]] = []

    def transaction(self, request: httpx.Request) -> httpx.Response:
        bundle = json.loads(request.content)
        self.bundles.append(bundle)
        entries = []
        for entry in bundle["entry"]:
            url = entry["request"]["url"]
            status = "200 OK" if url in self.stored else "201 Created"
            self.stored.add(url)
            entries.append({"response": {"status": status, "location": f"{url}/_history/1"}})
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        )


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=HAPI_BASE, assert_all_called=False, assert_all_mocked=True) as router:
        router.get("/metadata").respond(json=CAPABILITY)
        yield router


def load(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "load-fixtures", "--fhir-server", HAPI_BASE, "--token", TOKEN, *extra)


def test_each_patient_is_one_transaction_of_puts_with_stable_ids(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    store = HapiStore()
    server.post("").mock(side_effect=store.transaction)
    code, out, err = load(capsys, "--only", "V01,Barney")
    assert code == 0, err
    assert len(store.bundles) == 2
    for bundle in store.bundles:
        assert bundle["type"] == "transaction"
        assert {e["request"]["method"] for e in bundle["entry"]} == {"PUT"}
        assert "urn:uuid:" not in json.dumps([e["resource"] for e in bundle["entry"]])
    assert "Patient/hw-v01 " in out and "V01 Classic cauda equina" in out
    assert "Patient/5ee05359-57bf-4cee-8e89-91382c07e162 " in out and "Barney Abbott" in out
    assert "2 patients, 139 resources loaded into http://hapi.fhir.org/baseR4 (139 created, 0 updated)" in out
    for call in server.calls:
        assert call.request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in out + err


def test_a_second_run_updates_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    store = HapiStore()
    server.post("").mock(side_effect=store.transaction)
    assert load(capsys, "--only", "V01,V33,Barney", "--json")[0] == 0
    code, out, _ = load(capsys, "--only", "V01,V33,Barney", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["totals"]["created"] == 0
    assert report["totals"]["updated"] == report["totals"]["resources"] == 7 + 4 + 132
    first, second = store.bundles[:3], store.bundles[3:]
    assert [[e["request"]["url"] for e in b["entry"]] for b in first] == [
        [e["request"]["url"] for e in b["entry"]] for b in second
    ]


def test_vignette_dates_are_moved_to_the_day_given(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    store = HapiStore()
    server.post("").mock(side_effect=store.transaction)
    code, _, err = load(capsys, "--only", "V01", "--today", "2026-02-14")  # anchor + 30 days
    assert code == 0
    conditions = [
        e["resource"] for e in store.bundles[0]["entry"] if e["resource"]["resourceType"] == "Condition"
    ]
    assert conditions[0]["onsetDateTime"] == "2026-02-08"  # 2026-01-09 in the file
    assert "vignette dates moved by +30 days so that their 'today' is 2026-02-14" in err


def test_server_assigned_patient_ids_are_reported(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    def assigned(request: httpx.Request) -> httpx.Response:
        entries = [{"response": {"status": "201 Created", "location": "Patient/1203/_history/1"}}]
        entries += [{"response": {"status": "201 Created"}}] * (len(json.loads(request.content)["entry"]) - 1)
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        )

    server.post("").mock(side_effect=assigned)
    code, out, _ = load(capsys, "--only", "V33", "--json")
    assert code == 0
    assert json.loads(out)["patients"][0]["patient_id"] == "1203"


def test_a_rejected_bundle_shows_hapis_diagnostics_and_the_run_goes_on(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    store = HapiStore()

    posts: list[httpx.Request] = []

    def first_rejected(request: httpx.Request) -> httpx.Response:
        posts.append(request)
        if len(posts) == 1:
            return httpx.Response(400, json=hapi("hapi-oo-400-bad-json.json"))
        return store.transaction(request)

    server.post("").mock(side_effect=first_rejected)
    code, out, err = load(capsys, "--only", "V01,V03,V04")
    assert code == 1
    assert "FAILED Patient/hw-v01 (V01): FHIR server answered HTTP 400; server said: HAPI-0450" in out
    assert "Patient/hw-v03 " in out and "Patient/hw-v04 " in out
    assert "1 patient(s) could not be loaded" in err
    assert "Traceback" not in out + err


def test_an_authentication_failure_stops_the_run(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    denied = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "login", "diagnostics": "Token expired"}],
    }
    route = server.post("").respond(401, json=denied)
    code, _, err = load(capsys, "--only", "V01,V03,V04")
    assert code == 1
    assert route.call_count == 1
    assert "stopped, nothing more was sent: FHIR server answered HTTP 401; server said: Token expired" in err


def test_a_server_without_transactions_gets_one_put_per_resource(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    server.get("/metadata").respond(
        json={**CAPABILITY, "rest": [{"mode": "server", "interaction": [{"code": "history-system"}]}]}
    )
    puts = server.put(url__regex=rf"{HAPI_BASE}/\w+/[\w\-.]+").respond(201)
    code, out, err = load(capsys, "--only", "V33")
    assert code == 0, err
    assert puts.call_count == 4
    assert puts.calls[0].request.url.path == "/baseR4/Patient/hw-v33"
    assert "4 resources: 4 created, 0 updated" in out
    assert "no transactions: one PUT per resource" in err


def test_an_unreachable_server_is_one_line(
    capsys: pytest.CaptureFixture[str], server: respx.MockRouter
) -> None:
    server.get("/metadata").mock(side_effect=httpx.ConnectError("refused"))
    code, _, err = load(capsys, "--only", "V01")
    assert code == 1
    assert "FHIR server unreachable (ConnectError)" in err
    assert "Traceback" not in err


def test_nothing_matching_only_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = load(capsys, "--only", "V99")
    assert code == 1
    assert "no fixture Bundles under" in err
