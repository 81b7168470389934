"""Every test patient through a FHIR server as strict as Epic, on both paths, against a full prefetch.

The 40 public vignettes and our own cases are loaded into sekmet; a proxy refuses what Epic refuses
(``strict_fhir.py``). For each patient and each EHR profile the cards must be exactly those of a full
prefetch (every resource the server holds for the patient, supplied at once):
- EHR-run prefetch: each key filled by running the service's template against the strict server, the
  first page only, as the CDS Hooks sandbox does (the service pages the rest itself);
- service-run fetch: no prefetch, ``fhirServer`` set; the service runs the same queries.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cds_service.fixtures import case_patient_id, case_resources, transaction_bundle
from cds_service.main import create_app
from cds_service.prefetch import render
from cds_service.tools.local_search import default_templates, everything_prefetch
from tests.conftest import make_settings
from tests.integration.conftest import FirstLoad
from tests.integration.sekmet_server import SekmetServer
from tests.integration.strict_fhir import Mode, StrictFhir, strict_fhir
from tests.reliability.servers import ServiceThread
from tests.support import counter_ids, hook_request, vignette_expectations

CASES_DIR = Path(__file__).resolve().parent.parent / "clinical" / "cases"
SERVICE = "hip-weakness"
TYPES = ("Condition", "Observation", "MedicationRequest", "MedicationStatement")
EPIC_CLINICAL = {"active", "inactive", "resolved"}


@dataclass(frozen=True)
class Patient:
    id: str
    title: str
    resources: dict[str, list[dict[str, Any]]]  # resource type -> what the server holds


def own_cases() -> list[dict[str, Any]]:
    return [c for path in sorted(CASES_DIR.glob("*.yaml")) for c in yaml.safe_load(path.read_text()) or []]


@pytest.fixture(scope="module")
def patients(sekmet: SekmetServer, fhir_token: str, loaded: FirstLoad) -> list[Patient]:
    """The vignettes (loaded by ``load-fixtures``) and our cases (loaded here; a case written to test
    input the server itself refuses, such as an invalid FHIR date, cannot be on a server and is left
    out), each with what the server holds for it, read without any filter."""
    auth = {"Authorization": f"Bearer {fhir_token}", "Content-Type": "application/fhir+json"}
    today = datetime.now(UTC).date()
    titles = {p["patient_id"]: name for name, p in ((p["name"], p) for p in loaded.report["patients"])}
    with httpx.Client(base_url=sekmet.base_url, headers=auth, timeout=60) as http:
        for case in own_cases():
            resources = case_resources(case, today)
            if http.post("", json=transaction_bundle(resources)).status_code < 300:
                titles[case_patient_id(case)] = str(case["id"])
        out = []
        for pid, title in sorted(titles.items()):
            if not pid.startswith("hw-"):
                continue  # the Synthea patients: covered by test_fhir_sandbox
            held = {t: _all(http, t, pid) for t in TYPES}
            held["Patient"] = [http.get(f"/Patient/{pid}").json()]
            out.append(Patient(pid, title, held))
    assert len(out) >= 40 + 200, len(out)
    return out


def _all(http: httpx.Client, rtype: str, pid: str) -> list[dict[str, Any]]:
    bundle = http.get(f"/{rtype}", params={"patient": pid, "_count": 1000}).json()
    return [e["resource"] for e in bundle.get("entry") or [] if e["resource"]["resourceType"] == rtype]


@pytest.fixture(scope="module", params=["generic", "epic"])
def ehr(request: pytest.FixtureRequest, sekmet: SekmetServer) -> Iterator[StrictFhir]:
    with strict_fhir(sekmet.base_url, request.param) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def service(ehr: StrictFhir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service as deployed (uvicorn, real sockets), configured for the EHR's profile."""
    settings = make_settings(
        tmp_path_factory.mktemp(f"strict-{ehr.mode}"), ehr_profile=ehr.mode, fhir_time_budget_seconds=30
    )
    with ServiceThread(create_app(settings, id_factory=counter_ids())) as running:
        yield f"{running.url}/cds-services/{SERVICE}"


def cards(response: httpx.Response) -> list[dict[str, Any]]:
    """The cards without their random parts (uuids), for comparing answers."""
    assert response.status_code == 200, response.text
    out = response.json()["cards"]
    for card in out:
        card.pop("uuid")
        for suggestion in card.get("suggestions", []):
            suggestion.pop("uuid")
    return list(out)


def full_prefetch(patient: Patient, mode: Mode) -> dict[str, Any]:
    """Everything the server holds for the patient, supplied at once (under the profile's keys). Epic has
    no MedicationStatement, and every Epic Condition has a clinicalStatus of active, inactive or resolved
    (the only values Epic documents): a patient on Epic has nothing else."""
    held = dict(patient.resources)
    if mode == "epic":
        held["MedicationStatement"] = []
        held["Condition"] = [c for c in held["Condition"] if _clinical(c) in EPIC_CLINICAL]
    return everything_prefetch([r for rs in held.values() for r in rs], default_templates(SERVICE, mode))


def _clinical(condition: dict[str, Any]) -> str | None:
    codings = (condition.get("clinicalStatus") or {}).get("coding") or [{}]
    return codings[0].get("code")


def ehr_prefetch(patient: Patient, ehr: StrictFhir, token: str, templates: dict[str, str]) -> dict[str, Any]:
    """What an EHR sends: each template run against its (strict) server, first page only."""
    prefetch: dict[str, Any] = {}
    context = {"patientId": patient.id, "userId": "Practitioner/example"}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for key, template in templates.items():
            relative = render(template, context)
            assert relative is not None
            answer = http.get(f"{ehr.base}/{relative}")
            assert answer.status_code == 200, (key, answer.text)
            prefetch[key] = answer.json()
    return prefetch


def test_every_patient_gets_the_cards_of_a_full_prefetch_on_both_paths(
    service: str, ehr: StrictFhir, patients: list[Patient], fhir_token: str
) -> None:
    templates = default_templates(SERVICE, ehr.mode)
    for template in templates.values():  # no query asks for every Observation of the patient
        if template.startswith("Observation?"):
            assert "code=" in template or "category=" in template, template
    expected = vignette_expectations()["cases"]

    def compare(patient: Patient) -> list[str]:
        with httpx.Client(timeout=60) as http:
            full = cards(
                http.post(
                    service, json=hook_request(None, patient.id, prefetch=full_prefetch(patient, ehr.mode))
                )
            )
            vignette = expected.get(patient.title)
            if vignette is not None:  # the full prefetch itself is what the vignette expects
                assert {c["source"]["topic"]["code"] for c in full} >= set(vignette.get("must", [])), (
                    patient.title
                )
            supplied = hook_request(
                None,
                patient.id,
                prefetch=ehr_prefetch(patient, ehr, fhir_token, templates),
                fhir_server=ehr.base,
                token=fhir_token,
            )
            fetched = hook_request(None, patient.id, fhir_server=ehr.base, token=fhir_token)
            out = []
            for path, body in (("EHR prefetch", supplied), ("service fetch", fetched)):
                got = cards(http.post(service, json=body))
                if got != full:
                    out.append(f"{patient.title} ({path}): {_difference(got, full)}")
            return out

    with ThreadPoolExecutor(4) as pool:
        mismatches = [m for found in pool.map(compare, patients) for m in found]
    assert not mismatches, "\n".join(mismatches[:20])
    assert not [
        r for r in ehr.refused if r.startswith("Observation?") and "code=" not in r and "category=" not in r
    ]


def _difference(got: list[dict[str, Any]], full: list[dict[str, Any]]) -> str:
    """The first line that differs between the two answers, for the failure message."""
    a = json.dumps(got, indent=1, sort_keys=True).splitlines()
    b = json.dumps(full, indent=1, sort_keys=True).splitlines()
    diff = list(difflib.unified_diff(b, a, "full prefetch", "this path", n=0, lineterm=""))
    return " | ".join(diff[2:8])
