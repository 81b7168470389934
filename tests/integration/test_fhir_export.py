"""The knowledge artefacts load into a real FHIR server (sekmet-fhir, which validates every resource with
fhir.resources R4B) and read back unchanged: ``cds-service export-fhir`` run as a user runs it, the file
POSTed as a transaction, then every resource read by id, and a second load updating, not duplicating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.sekmet_server import SekmetServer
from tests.support import ROOT

pytestmark = pytest.mark.integration
SERVICE_URL = "https://cds.example.org"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fhir-export")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "export-fhir",
            "--output",
            str(out),
            "--base-url",
            SERVICE_URL,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    files = list(Path(out).glob("*.json"))
    assert len(files) == 1, files
    bundle: dict[str, Any] = json.loads(files[0].read_text())
    return bundle


def post(sekmet: SekmetServer, token: str, bundle: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        sekmet.base_url,
        content=json.dumps(bundle),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:2000]
    answer: dict[str, Any] = response.json()
    assert answer["type"] == "transaction-response"
    return answer


def read(sekmet: SekmetServer, token: str, path: str, **params: str) -> dict[str, Any]:
    response = httpx.get(
        f"{sekmet.base_url}/{path}", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text[:2000]
    body: dict[str, Any] = response.json()
    return body


def test_the_export_loads_into_a_fhir_server_and_reads_back_unchanged(
    sekmet: SekmetServer, fhir_token: str, exported: dict[str, Any]
) -> None:
    resources = [e["resource"] for e in exported["entry"]]
    kinds = {r["resourceType"] for r in resources}
    assert kinds == {"ValueSet", "ActivityDefinition", "PlanDefinition"} and len(resources) >= 76
    answer = post(sekmet, fhir_token, exported)
    assert len(answer["entry"]) == len(resources)
    assert {e["response"]["status"].split()[0] for e in answer["entry"]} <= {"200", "201"}
    for resource in resources:
        stored = read(sekmet, fhir_token, f"{resource['resourceType']}/{resource['id']}")
        assert stored.pop("meta")["versionId"]
        assert stored == {k: v for k, v in resource.items() if k != "meta"}, resource["id"]
    plan = read(sekmet, fhir_token, "PlanDefinition/hip-weakness")
    assert plan["extension"][0]["valueUri"] == f"{SERVICE_URL}/cds-services/hip-weakness"
    assert len(plan["action"]) == 31


def test_loading_the_export_again_updates_the_same_resources(
    sekmet: SekmetServer, fhir_token: str, exported: dict[str, Any]
) -> None:
    post(sekmet, fhir_token, exported)
    answer = post(sekmet, fhir_token, exported)
    assert {e["response"]["status"].split()[0] for e in answer["entry"]} == {"200"}
    for kind in ("ValueSet", "ActivityDefinition", "PlanDefinition"):
        expected = sum(e["resource"]["resourceType"] == kind for e in exported["entry"])
        assert read(sekmet, fhir_token, kind, _summary="count")["total"] == expected, kind
