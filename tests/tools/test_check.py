"""``cds-service check`` against HAPI-shaped and lenient FHIR servers (respx), in-process and remote.

HAPI pages with ``_getpages`` links and answers 400 to an unknown search parameter; lenient servers
answer 200 with an OperationOutcome entry. Either way the user reads the server's own diagnostics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from cds_service.fixtures import searchset
from cds_service.tools.local_search import default_templates
from tests.support import categories
from tests.tools.support import HAPI_BASE, TOKEN, hapi, of_type, run_cli, serve_patient, todays_resources


@pytest.fixture
def hapi_server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=HAPI_BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


def check(capsys: pytest.CaptureFixture[str], patient: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "check", "--fhir-server", HAPI_BASE, "--token", TOKEN, "--patient", patient, *extra
    )


def test_prefetch_follows_hapi_getpages_links(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    resources = todays_resources("V01")
    observations = of_type(resources, "Observation")
    first = searchset(observations[:1])
    first["link"] = [
        {
            "relation": "next",
            "url": f"{HAPI_BASE}?_getpages=p1&_getpagesoffset=1&_count=1&_bundletype=searchset",
        }
    ]
    pid = serve_patient(hapi_server, resources, {"Observation": {"json": first}})
    hapi_server.get("", params__contains={"_getpages": "p1"}).respond(json=searchset(observations[1:]))
    code, out, err = check(capsys, pid, "--json")
    assert code == 0, err
    assert categories(json.loads(out)) == ["urgent-referral"]
    line = next(x for x in err.splitlines() if x.strip().startswith("observations "))
    assert f"Observation?patient={pid}&category=" in line and "2 resources, 2 pages" in line
    assert TOKEN not in out + err
    assert all(c.request.headers["authorization"] == f"Bearer {TOKEN}" for c in hapi_server.calls)


def test_hapi_400_on_an_optional_search_is_shown_and_the_service_still_answers(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    rejected = {"status_code": 400, "json": hapi("hapi-oo-400-unknown-search-param.json")}
    pid = serve_patient(hapi_server, todays_resources("V01"), {"MedicationStatement": rejected})
    code, out, err = check(capsys, pid)
    assert code == 0, err
    assert "medicationStatements" in err and "HAPI-0524: Unknown search parameter" in err
    assert "CRITICAL" in out
    statement_calls = [c for c in hapi_server.calls if c.request.url.path.endswith("/MedicationStatement")]
    assert len(statement_calls) == 2  # ours, then the service's own attempt after our OperationOutcome
    assert "Traceback" not in err


def test_required_search_rejected_ends_with_the_services_412_diagnostics(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    rejected = {"status_code": 400, "json": hapi("hapi-oo-400-unknown-search-param.json")}
    no_observations = {"json": searchset([])}  # then only the Conditions could show hip weakness
    pid = serve_patient(
        hapi_server, todays_resources("V01"), {"Condition": rejected, "Observation": no_observations}
    )
    code, _, err = check(capsys, pid)
    assert code == 1
    assert "the service answered HTTP 412: Required prefetch 'conditions' could not be obtained" in err
    assert "HAPI-0524" in err
    assert "Traceback" not in err


def test_unknown_patient_prints_hapis_diagnostics(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    hapi_server.get("/Patient/does-not-exist").respond(404, json=hapi("hapi-oo-404-not-known.json"))
    code, out, err = check(capsys, "does-not-exist")
    assert code == 1
    assert out == ""
    assert "HAPI-2001: Resource Patient/does-not-exist is not known" in err
    assert "Traceback" not in err


def test_lenient_server_outcome_entry_is_shown_as_a_warning(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    resources = todays_resources("V33")
    conditions = searchset(of_type(resources, "Condition"))
    conditions["entry"].append(
        {
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": "Ignored _foo"}],
            },
            "search": {"mode": "outcome"},
        }
    )
    pid = serve_patient(hapi_server, resources, {"Condition": {"json": conditions}})
    code, out, err = check(capsys, pid, "--json")
    assert code == 0
    assert "warning: the server said about conditions: Ignored _foo" in err
    assert categories(json.loads(out)) == ["physiotherapy"]


def test_no_prefetch_leaves_every_query_to_the_service_with_the_token(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    pid = serve_patient(hapi_server, todays_resources("V33"))
    code, out, err = check(capsys, pid, "--no-prefetch", "--json")
    assert code == 0, err
    assert categories(json.loads(out)) == ["physiotherapy"]
    paths = [c.request.url.path.removeprefix("/baseR4/") for c in hapi_server.calls]
    ours = [f"Patient/{pid}"]  # the check reads the patient; the service runs every template
    theirs = [t.split("?")[0].replace("{{context.patientId}}", pid) for t in default_templates().values()]
    assert sorted(paths) == sorted(ours + theirs)
    assert all(c.request.headers["authorization"] == f"Bearer {TOKEN}" for c in hapi_server.calls)
    assert "no prefetch: it fetches from" in err


def test_a_running_service_gets_the_request_an_ehr_would_send(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    pid = serve_patient(hapi_server, todays_resources("V46"))
    service = "http://cds.example.org"
    discovery = {
        "services": [
            {
                "hook": "patient-view",
                "id": "hip-weakness",
                "prefetch": {"conditions": "Condition?patient={{context.patientId}}"},
            }
        ]
    }
    with respx.mock(base_url=service, assert_all_mocked=True) as remote:
        remote.get("/cds-services").respond(json=discovery)
        call = remote.post("/cds-services/hip-weakness").respond(json={"cards": []})
        code, out, err = check(capsys, pid, "--service-url", f"{service}/cds-services")
    assert code == 0, err
    assert out.strip() == f"Patient/{pid}, hip-weakness (patient-view): no cards."
    sent = json.loads(call.calls.last.request.content)
    assert sent["hook"] == "patient-view"
    assert sent["fhirServer"] == HAPI_BASE
    assert sent["context"] == {"userId": "Practitioner/cds-service-check", "patientId": pid}
    assert sent["fhirAuthorization"]["access_token"] == TOKEN
    assert set(sent["prefetch"]) == {"conditions"}
    assert sent["prefetch"]["conditions"]["resourceType"] == "Bundle"


def test_service_that_cannot_be_reached_is_one_line(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    with respx.mock(assert_all_mocked=True) as remote:
        remote.get("http://cds.example.org/cds-services").mock(side_effect=httpx.ConnectError("refused"))
        code, _, err = check(capsys, "x", "--service-url", "http://cds.example.org")
    assert code == 1
    assert "error: cannot reach the CDS service at http://cds.example.org (ConnectError)" in err
    assert "Traceback" not in err


def test_order_hooks_need_draft_orders(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(capsys, "x", "--hook", "order-sign")
    assert code == 1
    assert "the order-sign hook needs draft orders (--draft-orders FILE)" in err


def test_order_select_selects_every_draft_order(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter, tmp_path: Path
) -> None:
    pid = serve_patient(hapi_server, todays_resources("V01"))
    draft = {
        "resourceType": "ServiceRequest",
        "id": "physio-1",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306170007"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    orders = tmp_path / "orders.json"
    orders.write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]})
    )
    code, out, err = check(capsys, pid, "--hook", "order-select", "--draft-orders", str(orders), "--json")
    assert code == 0, err
    assert "hip-weakness-order-select" in err
    assert json.loads(out)["cards"], "a physiotherapy order with a red flag is warned about"


def test_the_in_process_service_keeps_its_audit_trail_to_itself(
    capsys: pytest.CaptureFixture[str],
    hapi_server: respx.MockRouter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configured = tmp_path / "configured-data"
    monkeypatch.setenv("CDS_DATA_DIR", str(configured))
    monkeypatch.setenv("CDS_ENV", "production")  # overridden: a trial run is never production
    pid = serve_patient(hapi_server, todays_resources("V46"))
    code, _, err = check(capsys, pid)
    assert code == 0, err
    assert not configured.exists()


def test_a_service_that_wants_a_jwt_says_how_to_try_it_locally(
    capsys: pytest.CaptureFixture[str], hapi_server: respx.MockRouter
) -> None:
    pid = serve_patient(hapi_server, todays_resources("V46"))
    denied = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "security", "diagnostics": "Authentication required"}],
    }
    with respx.mock(base_url="http://cds.example.org", assert_all_mocked=True) as remote:
        remote.get("/cds-services").respond(
            json={"services": [{"hook": "patient-view", "id": "hip-weakness"}]}
        )
        remote.post("/cds-services/hip-weakness").respond(401, json=denied)
        code, out, err = check(capsys, pid, "--service-url", "http://cds.example.org")
    assert code == 1
    assert out == ""
    assert "the service answered HTTP 401: Authentication required" in err
    assert "CDS_AUTH=off" in err
