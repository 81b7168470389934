"""What a clinical safety reviewer gets from /docs: documented endpoints, the audit credential, and the path
from a patient to the card shown, the rules and facts behind it, and what clinicians did with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cds_service.cli import main as cli_main
from cds_service.config import Settings
from tests.audit.conftest import AUDIT, PATIENT, flush, private_request

REVIEWER_OPERATIONS = {
    ("get", "/audit/invocations"),
    ("get", "/audit/invocations/{hook_instance}"),
    ("get", "/audit/stats"),
    ("post", "/explain/{service_id}"),
}


def test_the_reviewers_path_from_a_patient_to_the_rule_and_the_feedback(client: TestClient) -> None:
    card = client.post("/cds-services/hip-weakness", json=private_request()).json()["cards"][0]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                        "code": "cds-not-applicable",
                        "display": "Does not apply to this patient (e.g. already assessed or arranged)",
                    }
                },
                "outcomeTimestamp": "2026-01-15T12:04:00Z",
            }
        ]
    }
    assert client.post("/cds-services/hip-weakness/feedback", json=feedback).status_code == 200
    flush(client)

    # 1. the patient's calls (the reviewer types the id; the server hashes it)
    [call] = client.get("/audit/invocations", params={"patient": PATIENT}, headers=AUDIT).json()["items"]
    assert (
        client.get("/audit/invocations", params={"patient": "someone-else"}, headers=AUDIT).json()["items"]
        == []
    )
    assert call["categories"] == ["urgent-referral"]
    # 2. the call: the card, the rule behind it, the facts it fired on, and the feedback
    detail = client.get(f"/audit/invocations/{call['hook_instance']}", headers=AUDIT).json()
    [shown] = [c for c in detail["cards"] if c["uuid"] == card["uuid"]]
    [rule_id] = shown["rule_ids"]
    fired = next(r for r in detail["trace"]["rules"] if r["id"] == rule_id)
    assert fired["fired"] and fired["facts"]
    assert any(leaf["passed"] for leaf in fired["leaves"])
    assert shown["feedback"][0]["reasons"][0]["code"] == "cds-not-applicable"
    # 3. the rule in words, with its codes
    rule = client.get(f"/rules/{rule_id}").json()
    assert rule["version"] == fired["version"]
    assert rule["logic"] and rule["evidence"] and rule["card"]["reason"]
    assert rule["codes"] and {v["id"] for v in rule["codes"]} == set(rule["valuesets"])
    listed = {c.get("code") for v in rule["codes"] for c in v["codes"]}
    assert {f["code"] for f in fired["facts"]} & listed  # the codes that fired are the rule's codes


def test_rules_and_value_sets_are_public_and_complete(client: TestClient) -> None:
    index = client.get("/rules").json()
    assert index["rules"] and all(r["version"] and r["pathway"] and r["logic"] for r in index["rules"])
    assert all("codes" not in r for r in index["rules"])  # codes: GET /rules/{id} and GET /valuesets
    valuesets = client.get("/valuesets").json()["valuesets"]
    assert {v["id"] for v in valuesets} == {v["id"] for v in index["valuesets"]}
    assert sum(len(v["codes"]) for v in valuesets) > 100
    assert client.get("/rules/NOPE").status_code == 404


def test_openapi_documents_the_reviewer_endpoints_and_the_audit_credential(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["AuditToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["AuditToken"]["description"],
    }
    for method, path in REVIEWER_OPERATIONS:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"AuditToken": []}], path
        assert operation["summary"] and operation["description"], path
        assert "401" in operation["responses"], path
        content = operation["responses"]["200"]["content"]["application/json"]
        assert "$ref" in str(content["schema"]), path
    for path in ("/audit/invocations", "/audit/invocations/{hook_instance}", "/audit/stats"):
        assert schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["example"]
    feedback = schema["paths"]["/cds-services/{service_id}/feedback"]["post"]
    assert feedback["summary"] and feedback["description"]
    examples = feedback["requestBody"]["content"]["application/json"]["examples"]
    assert {"accepted", "overridden", "overridden-with-reason", "epic", "sandbox", "batch"} <= set(examples)
    assert "FeedbackRequest" in schema["components"]["schemas"]
    assert "security" not in schema["paths"]["/rules/{rule_id}"]["get"]  # rules stay public


def test_every_feedback_example_in_the_docs_is_accepted(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    examples = schema["paths"]["/cds-services/{service_id}/feedback"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    for name, example in examples.items():
        response = client.post("/cds-services/hip-weakness/feedback", json=example["value"])
        assert response.status_code == 200, name


def test_production_refuses_to_start_without_an_audit_token(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text("[]")
    with pytest.raises(ValidationError, match="CDS_AUDIT_TOKEN"):
        Settings(env="production", trusted_clients_file=clients, patient_hash_secret="k")


def test_the_migrate_command(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    monkeypatch.setenv("CDS_DATA_DIR", str(tmp_path / "data"))
    assert cli_main(["migrate"]) == 0
    assert "is at revision 0002" in capsys.readouterr().out
    assert cli_main(["migrate"]) == 0  # again: nothing to do
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'x.sqlite3'}")
    assert cli_main(["migrate"]) == 1
    assert "migration failed" in capsys.readouterr().out
