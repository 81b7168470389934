"""What a hook call leaves in the audit trail (SQLite and PostgreSQL), and what it never leaves."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import respx
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import MetaData, create_engine, select

from cds_service.audit.database import normalise_url
from cds_service.audit.pseudonym import PatientPseudonym
from cds_service.fixtures import searchset
from cds_service.tools.local_search import default_templates
from tests.audit.conftest import (
    AUDIT,
    AUDIT_TOKEN,
    HASH_KEY,
    PATIENT,
    counters,
    flush,
    open_client,
    private_request,
)
from tests.support import NOW, hook_request

URL = "/cds-services/hip-weakness"
HOOK_INSTANCE = "11111111-2222-4333-8444-555555555555"
FHIR_TOKEN = "fhir-access-token-never-stored-123"


def dump_database(database_url: str) -> str:
    """Every row of every table as text: what a reader of the database would see."""
    engine = create_engine(normalise_url(database_url))
    meta = MetaData()
    meta.reflect(engine)
    out: list[str] = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            out += [json.dumps(list(row), default=str) for row in conn.execute(select(table))]
    engine.dispose()
    return "\n".join(out)


def test_a_hook_call_is_recorded_with_everything_a_reviewer_needs(client: TestClient) -> None:
    response = client.post(URL, json=private_request())
    assert response.status_code == 200
    card = response.json()["cards"][0]
    flush(client)

    detail = client.get(f"/audit/invocations/{HOOK_INSTANCE}", headers=AUDIT).json()
    assert detail["hook_instance"] == HOOK_INSTANCE
    assert (detail["service_id"], detail["hook"]) == ("hip-weakness", "patient-view")
    assert detail["started_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert detail["duration_ms"] > 0
    assert detail["patient_hash"] == PatientPseudonym(SecretStr(HASH_KEY))(PATIENT)
    assert detail["prefetch"] == dict.fromkeys(default_templates(), "supplied")
    assert detail["prefetch_resources"]["conditions"] == {"supplied": 4, "fetched": 0}
    assert detail["fired_rules"] == ["HW", "RF-CES"]
    rules = {r["id"]: r for r in detail["trace"]["rules"]}
    assert len(rules) > 10  # every rule evaluated, fired or not
    assert all(r["version"] for r in rules.values())
    assert rules["RF-CES"]["fired"] and not rules["H-OA"]["fired"]
    facts = rules["RF-CES"]["facts"]
    assert {"resourceType", "id", "code", "date"} <= set(facts[0])
    assert {f["id"] for f in facts} >= {"res-con-3", "res-con-4"}
    assert detail["trace"]["unreadable"] == []
    [stored] = detail["cards"]
    assert stored["uuid"] == card["uuid"]
    assert (stored["category"], stored["indicator"]) == ("urgent-referral", "critical")
    assert stored["summary"] == card["summary"]
    assert stored["rule_ids"] == ["RF-CES"]
    assert stored["suggestion_ids"] == [s["uuid"] for s in card["suggestions"]]


def test_resources_the_engine_could_not_read_are_recorded(client: TestClient) -> None:
    body = private_request()
    body["prefetch"]["conditions"]["entry"][0]["resource"]["onsetDateTime"] = "2026-13-45"
    assert client.post(URL, json=body).status_code == 200
    flush(client)
    detail = client.get(f"/audit/invocations/{HOOK_INSTANCE}", headers=AUDIT).json()
    assert detail["unreadable_count"] == len(detail["trace"]["unreadable"]) >= 1
    assert detail["trace"]["unreadable"][0]["resource"].startswith("Condition/res-")


def test_the_client_is_recorded_from_its_verified_jwt(tmp_path: Path, database_url: str) -> None:
    from tests.audit.conftest import audit_settings
    from tests.security.helpers import ISS, FrozenClock, KeyRing, Tokens, ec_key, rsa_key

    keys = KeyRing(ec1=ec_key("ec-1"), rsa1=rsa_key("rsa-1"), ec2=ec_key("ec-2"), impostor=ec_key("ec-1"))
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([{"iss": ISS, "jwks": KeyRing.jwks(keys.ec1)}]))
    settings = audit_settings(
        tmp_path,
        database_url,
        auth="required",
        trusted_clients_file=clients,
        public_base_url="https://cds.example.org",
    )
    import time

    tokens = Tokens(keys, FrozenClock(time.time()))
    with open_client(settings) as client:
        jwt = tokens.sign(tenant="hospital-a")
        response = client.post(URL, json=private_request(), headers={"Authorization": f"Bearer {jwt}"})
        assert response.status_code == 200
        flush(client)
        item = client.get("/audit/invocations", headers=AUDIT).json()["items"][0]
        assert (item["client_iss"], item["client_tenant"]) == (ISS, "hospital-a")
        # the EHR's JWT is not the audit credential, and the audit token is not an EHR credential
        assert client.get("/audit/invocations", headers={"Authorization": f"Bearer {jwt}"}).status_code == 401
        other = tokens.sign()
        assert client.post(URL, json=private_request(), headers=AUDIT).status_code == 401
        assert (
            client.post(URL, json=private_request(), headers={"Authorization": f"Bearer {other}"}).status_code
            == 200
        )
    assert jwt not in dump_database(database_url)


def test_no_patient_id_and_no_token_in_the_store_or_the_logs(
    client: TestClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = private_request()
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = {
        "access_token": FHIR_TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds",
    }
    assert client.post(URL, json=body).status_code == 200
    card = client.post(URL, json=private_request(hook_instance="second")).json()["cards"][0]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"userComment": f"patient {PATIENT} declined"},
                "outcomeTimestamp": "2026-01-15T12:10:00Z",
            }
        ]
    }
    assert client.post(f"{URL}/feedback", json=feedback).status_code == 200
    flush(client)
    assert client.get(f"/audit/invocations?patient={PATIENT}", headers=AUDIT).json()["items"]
    flush(client)
    stored = dump_database(database_url)
    assert "res-con-3" in stored  # the dump does hold the records
    # the service's logs (the test client's own httpx2 lines show the URLs it requested)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "hook call service=hip-weakness" in logged
    for secret in (PATIENT, FHIR_TOKEN, AUDIT_TOKEN, HASH_KEY):
        assert secret not in stored, secret
        assert secret not in logged, secret


def test_explain_returns_cards_and_the_full_trace_and_records_nothing(client: TestClient) -> None:
    response = client.post("/explain/hip-weakness", json=private_request(), headers=AUDIT)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["recorded"] is False
    assert [c["source"]["topic"]["code"] for c in data["cards"]] == ["urgent-referral"]
    rules = {r["id"]: r for r in data["trace"]["rules"]}
    assert rules["RF-CES"]["fired"] and rules["RF-CES"]["facts"][0]["display"]  # with display text
    assert any(not r["fired"] for r in rules.values())
    assert data["prefetch"]["conditions"] == "supplied"
    flush(client)
    assert client.get("/audit/invocations", headers=AUDIT).json()["items"] == []
    assert counters(client)["submitted"] == 0


def test_explain_does_not_fetch_from_the_fhir_server_in_the_body(client: TestClient) -> None:
    body = hook_request(None, "hw-v01", fhir_server="https://attacker.example.com/fhir", token="abc")
    response = client.post("/explain/hip-weakness", json=body, headers=AUDIT)
    assert response.status_code == 412
    assert "fhirServer" in response.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_audit_and_explain_need_the_audit_token(client: TestClient, headers: dict[str, Any]) -> None:
    for response in (
        client.get("/audit/invocations", headers=headers),
        client.get(f"/audit/invocations/{HOOK_INSTANCE}", headers=headers),
        client.get("/audit/stats", headers=headers),
        client.post("/explain/hip-weakness", json=private_request(), headers=headers),
    ):
        assert response.status_code == 401
        wrong = headers.get("Authorization", "").startswith("Bearer ")
        assert response.headers["www-authenticate"] == (
            'Bearer error="invalid_token", error_description="the bearer token is not the audit token"'
            if wrong
            else "Bearer"
        )
        assert response.json()["resourceType"] == "OperationOutcome"


def test_without_a_configured_audit_token_the_audit_endpoints_are_closed(
    tmp_path: Path, database_url: str
) -> None:
    from tests.audit.conftest import audit_settings

    with open_client(audit_settings(tmp_path, database_url, audit_token=None)) as client:
        assert client.get("/audit/stats", headers=AUDIT).status_code == 401


def test_a_jwt_accepted_by_one_worker_is_refused_by_another(tmp_path: Path, database_url: str) -> None:
    """Two app instances sharing the database stand for two workers (or two hosts)."""
    import time

    from tests.audit.conftest import audit_settings
    from tests.security.helpers import ISS, FrozenClock, KeyRing, Tokens, ec_key, rsa_key

    keys = KeyRing(ec1=ec_key("ec-1"), rsa1=rsa_key("rsa-1"), ec2=ec_key("ec-2"), impostor=ec_key("ec-1"))
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([{"iss": ISS, "jwks": KeyRing.jwks(keys.ec1)}]))
    options = {
        "auth": "required",
        "trusted_clients_file": clients,
        "public_base_url": "https://cds.example.org",
    }
    tokens = Tokens(keys, FrozenClock(time.time()))
    token = {"Authorization": f"Bearer {tokens.sign()}"}
    with (
        open_client(audit_settings(tmp_path / "a", database_url, **options)) as worker_a,
        open_client(audit_settings(tmp_path / "b", database_url, **options)) as worker_b,
    ):
        assert worker_a.post(URL, json=private_request(), headers=token).status_code == 200
        assert worker_b.post(URL, json=private_request(), headers=token).status_code == 401
        assert worker_a.post(URL, json=private_request(), headers=token).status_code == 401
        fresh = {"Authorization": f"Bearer {tokens.sign()}"}
        assert worker_b.post(URL, json=private_request(), headers=fresh).status_code == 200
        assert counters(worker_a)["replay_cache_fallbacks"] == 0


def test_pages_the_service_fetched_after_the_ehrs_first_page_are_recorded_as_fetched(
    client: TestClient,
) -> None:
    """The CDS Hooks sandbox sends the first page of a search; the service reads the rest itself. The
    audit trail says so: the key is "paged", its resources split between supplied and fetched."""
    body = private_request(hook_instance="22222222-2222-4333-8444-555555555555")
    conditions = [e["resource"] for e in body["prefetch"]["conditions"]["entry"]]
    base = "https://ehr.example.org/fhir"
    first = searchset(conditions[:1])
    first["link"] = [{"relation": "next", "url": f"{base}/Condition?patient={PATIENT}&page=2"}]
    body["prefetch"]["conditions"] = first
    body["fhirServer"] = base
    with respx.mock(base_url=base, assert_all_mocked=True) as fhir:
        fhir.get("/Condition", params__contains={"page": "2"}).respond(json=searchset(conditions[1:]))
        response = client.post(URL, json=body)
    assert response.status_code == 200
    flush(client)
    detail = client.get("/audit/invocations/22222222-2222-4333-8444-555555555555", headers=AUDIT).json()
    assert detail["prefetch"]["conditions"] == "paged"
    assert detail["prefetch_resources"]["conditions"] == {"supplied": 1, "fetched": len(conditions) - 1}
    assert detail["prefetch"]["observations"] == "supplied"
