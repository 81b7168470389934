"""End to end on a real FHIR server (sekmet-fhir): load-fixtures, check, and the service's own fetch.

The server requires a bearer token, so every answer with data proves the token reached it; sekmet's
traffic log (redacted to ``Bearer ***redacted***``) shows which requests carried one. Vignette dates
are shifted to today by the loader and the service runs on the real clock, as a site would run it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service import cli
from cds_service.main import create_app
from cds_service.tools.local_search import default_templates
from tests.conftest import make_settings
from tests.integration.conftest import FirstLoad
from tests.integration.sekmet_server import SekmetServer
from tests.support import FIXTURES, categories, highest_indicator, hook_request, vignette_expectations

pytestmark = pytest.mark.integration

CASES: dict[str, Any] = vignette_expectations()["cases"]
VENDOR_CASES = json.loads((FIXTURES / "vendors" / "expected.json").read_text())["cases"]
SYNTHEA = "Adalberto_Hartmann_44ec4447-9e2c-4eb9-bd4f-0bdb416b806e"  # 344 entries, 200 Observations
SYNTHEA_PATIENT = "ba18818d-faef-44cd-9744-b12d8973d402"
SEARCHED = [t.split("?")[0] for t in default_templates().values() if "?" in t]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check(
    capsys: pytest.CaptureFixture[str], sekmet: SekmetServer, token: str, patient: str, *extra: str
) -> tuple[int, str, str]:
    return run_cli(
        capsys, "check", "--fhir-server", sekmet.base_url, "--token", token, "--patient", patient, *extra
    )


def server_total(sekmet: SekmetServer, token: str, rtype: str) -> int:
    response = httpx.get(
        f"{sekmet.base_url}/{rtype}",
        params={"_summary": "count"},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    return int(response.json()["total"])


# -- load-fixtures ---------------------------------------------------------------------------------------


def test_load_fixtures_loads_every_patient_and_prints_their_ids(loaded: FirstLoad) -> None:
    ids = loaded.patient_ids()
    assert {ids[case] for case in CASES} == {c["patient"] for c in CASES.values()}
    assert ids[SYNTHEA] == SYNTHEA_PATIENT  # stable id: the Synthea urn:uuid
    totals = loaded.report["totals"]
    assert totals["failed"] == 0
    assert totals["patients"] == len(CASES) + 2 + len(VENDOR_CASES)
    assert totals["created"] == totals["resources"]
    assert "transactions" in loaded.stderr
    # one transaction per patient (not one request per resource), after one capability read
    assert [r.method for r in loaded.requests] == ["GET"] + ["POST"] * totals["patients"]


def test_load_fixtures_twice_creates_nothing_new(
    capsys: pytest.CaptureFixture[str], sekmet: SekmetServer, fhir_token: str, loaded: FirstLoad
) -> None:
    before = {rtype: server_total(sekmet, fhir_token, rtype) for rtype in ("Patient", *SEARCHED)}
    code, out, err = run_cli(capsys, "load-fixtures", "--fhir-server", sekmet.base_url, "--token", fhir_token)
    assert code == 0, err
    after = {rtype: server_total(sekmet, fhir_token, rtype) for rtype in ("Patient", *SEARCHED)}
    assert after == before
    assert before["Patient"] == len(CASES) + 2 + len(VENDOR_CASES)
    assert f"(0 created, {loaded.report['totals']['resources']} updated)" in out
    for patient_id in loaded.patient_ids().values():
        assert f"Patient/{patient_id} " in out
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert fhir_token not in out + err


# -- check: categories on the real server ------------------------------------------------------------------


@pytest.mark.parametrize("case", ["V01", "V33", "V46"])  # red flag, physiotherapy, no hip weakness
def test_check_gives_the_expected_categories(
    case: str,
    capsys: pytest.CaptureFixture[str],
    sekmet: SekmetServer,
    fhir_token: str,
    loaded: FirstLoad,
) -> None:
    expected = CASES[case]
    code, out, err = check(capsys, sekmet, fhir_token, expected["patient"], "--json")
    assert code == 0, err
    response = json.loads(out)
    found = set(categories(response))
    assert set(expected["must"]) <= found
    assert not set(expected["mustNot"]) & found
    assert highest_indicator(response) == expected["indicator"]
    assert f"Condition?patient={expected['patient']}" in err  # progress: the prefetch queries ran
    assert "warning" not in err and "error" not in err
    assert fhir_token not in out + err


def test_check_prints_cards_for_a_clinician(
    capsys: pytest.CaptureFixture[str], sekmet: SekmetServer, fhir_token: str, loaded: FirstLoad
) -> None:
    code, out, _ = check(capsys, sekmet, fhir_token, "hw-v01")
    assert code == 0
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert out.startswith("Patient/hw-v01, hip-weakness (patient-view): 1 card")
    assert "CRITICAL" in out
    assert "urgent-referral" in out
    assert f"Retention of urine (disorder) (Condition SNOMED CT 267064002; onset {yesterday})" in out
    assert "[ ] Refer for same-day emergency assessment (recommended)" in out
    assert "**" not in out and "\x1b[" not in out


def test_check_without_prefetch_lets_the_service_fetch_with_the_token(
    capsys: pytest.CaptureFixture[str], sekmet: SekmetServer, fhir_token: str, loaded: FirstLoad
) -> None:
    mark = sekmet.last_traffic_id()
    code, out, err = check(capsys, sekmet, fhir_token, "hw-v33", "--no-prefetch", "--json")
    assert code == 0, err
    assert categories(json.loads(out)) == ["physiotherapy"]
    received = sekmet.inbound(mark, at_least=6)  # our Patient read, then the service's five queries
    searches = [r for r in received if "?" in r.url and "patient=hw-v33" in r.url]
    assert {s.url.split("?")[0] for s in searches} == {f"/fhir/{t}" for t in SEARCHED}
    assert all(s.authorization == "Bearer ***redacted***" and s.status == 200 for s in searches)


# -- the service's missing-prefetch path (foundation issue) -------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TestClient]:
    """The app on the real clock (the loader moved the vignettes to today)."""
    with TestClient(create_app(make_settings(tmp_path, fhir_time_budget_seconds=10.0))) as client:
        yield client


def test_service_fetches_all_prefetch_from_the_fhir_server_with_a_bearer_token(
    service: TestClient, sekmet: SekmetServer, fhir_token: str, loaded: FirstLoad
) -> None:
    mark = sekmet.last_traffic_id()
    body = hook_request(None, "hw-v01", fhir_server=sekmet.base_url, token=fhir_token)
    assert "prefetch" not in body
    response = service.post("/cds-services/hip-weakness", json=body)
    assert response.status_code == 200, response.text
    assert categories(response.json()) == ["urgent-referral"]
    received = sekmet.inbound(mark, at_least=len(default_templates()))
    assert sorted(r.url.split("?")[0] for r in received) == sorted(
        ["/fhir/Patient/hw-v01", *(f"/fhir/{t}" for t in SEARCHED)]
    )
    assert all(r.authorization == "Bearer ***redacted***" and r.status == 200 for r in received)


def test_without_the_token_the_server_refuses_and_the_service_answers_412(
    service: TestClient, sekmet: SekmetServer, loaded: FirstLoad
) -> None:
    response = service.post(
        "/cds-services/hip-weakness", json=hook_request(None, "hw-v01", fhir_server=sekmet.base_url)
    )
    assert response.status_code == 412
    diagnostics = " ".join(i["diagnostics"] for i in response.json()["issue"])
    assert "HTTP 401" in diagnostics and "Authentication required" in diagnostics


# -- a large, realistic patient -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--no-prefetch"]], ids=["prefetch", "service-fetches"])
def test_synthea_patient_gets_no_cards_and_no_errors(
    mode: list[str],
    capsys: pytest.CaptureFixture[str],
    sekmet: SekmetServer,
    fhir_token: str,
    loaded: FirstLoad,
) -> None:
    code, out, err = check(capsys, sekmet, fhir_token, SYNTHEA_PATIENT, "--json", *mode)
    assert code == 0, err
    assert json.loads(out) == {"cards": []}
    assert "warning" not in err and "error" not in err
    if not mode:  # the Observation searches ask for what the rules read, not the 200 the patient has
        lines = [x for x in err.splitlines() if x.strip().startswith("observation")]
        counts = [int(m.group(1)) for x in lines if (m := re.search(r"\.\.\. (\d+) resources?", x))]
        assert len(counts) == len(lines) == sum(k.startswith("observation") for k in default_templates())
        assert 0 < sum(counts) < 200, lines


# -- errors are the server's words, not tracebacks ------------------------------------------------------


def test_unknown_patient_prints_the_servers_diagnostics(
    capsys: pytest.CaptureFixture[str], sekmet: SekmetServer, fhir_token: str, loaded: FirstLoad
) -> None:
    code, out, err = check(capsys, sekmet, fhir_token, "does-not-exist")
    assert code == 1
    assert "HTTP 404; server said: Patient/does-not-exist not found" in err
    assert "Traceback" not in out + err


def test_wrong_token_prints_the_servers_diagnostics_and_not_the_token(
    capsys: pytest.CaptureFixture[str], sekmet: SekmetServer, loaded: FirstLoad
) -> None:
    code, out, err = check(capsys, sekmet, "not-the-token", "hw-v01")
    assert code == 1
    assert "HTTP 401; server said:" in err
    assert "not-the-token" not in out + err
    assert "Traceback" not in out + err
