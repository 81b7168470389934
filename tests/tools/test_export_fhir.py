"""``cds-service export-fhir``: the ``/fhir`` resources, unchanged, as one transaction Bundle to load
into a FHIR server (loading it into a real one is in tests/integration/test_fhir_export.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service import cli
from cds_service.artefacts.common import validate

VALUE_SETS = len(list((Path(__file__).resolve().parents[2] / "rules" / "valuesets").glob("*.yaml")))


def served(client: TestClient, resource_type: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{resource_type}")
    assert response.status_code == 200
    return [e["resource"] for e in response.json()["entry"]]


def test_export_writes_the_same_resources_as_a_transaction(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_PUBLIC_BASE_URL", raising=False)
    assert cli.main(["export-fhir", "--output", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert (
        f"{VALUE_SETS + 13} resources (10 ActivityDefinition, 3 PlanDefinition, {VALUE_SETS} ValueSet)" in out
    )
    assert "relative" in err
    files = list((tmp_path / "out").iterdir())
    assert len(files) == 1
    bundle = json.loads(files[0].read_text())
    validate(bundle)
    assert bundle["type"] == "transaction"
    online = {
        (r["resourceType"], r["id"]): r
        for kind in ("ValueSet", "PlanDefinition", "ActivityDefinition")
        for r in served(client, kind)
    }
    exported = {(e["resource"]["resourceType"], e["resource"]["id"]): e for e in bundle["entry"]}
    assert set(exported) == set(online)
    for key, entry in exported.items():
        assert entry["request"] == {"method": "PUT", "url": f"{key[0]}/{key[1]}"}
        assert entry["fullUrl"] == entry["resource"]["url"]
        resource, same = entry["resource"], online[key]
        if key[0] == "ValueSet":  # stamped when each was generated
            resource["expansion"].pop("timestamp")
            same = {**same, "expansion": {k: v for k, v in same["expansion"].items() if k != "timestamp"}}
        assert resource == same, key


def test_export_takes_the_service_address_for_links(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["export-fhir", "-o", str(tmp_path), "--base-url", "https://cds.example.org/"]) == 0
    assert capsys.readouterr().err == ""
    bundle = json.loads(next(tmp_path.iterdir()).read_text())
    plans = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "PlanDefinition"]
    assert plans[0]["extension"][0]["valueUri"] == "https://cds.example.org/cds-services/hip-weakness"
