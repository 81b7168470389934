"""Operator endpoints in-process: /healthz, /readyz, /metrics (content, labels, no patient data), the
correlation id, JSON log lines, and the settings reference in docs/deployment.md."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.logs import CorrelationFilter, json_formatter
from cds_service.main import create_app
from cds_service.settings_doc import END, START, settings_reference
from cds_service.tools.local_search import default_templates
from tests.conftest import make_settings
from tests.support import FHIR_BASE, NOW, ROOT, bundle_resources, hook_request, vignette_bundle

V01 = bundle_resources(vignette_bundle("V01"))
SANDBOX_JWKS = json.loads((ROOT / "tests" / "security" / "keys" / "sandbox-jwks.json").read_text())
DEAD_DATABASE = "postgresql+psycopg://nobody@127.0.0.1:9/nothing"  # port 9 (discard): refused at once


def app_client(tmp_path: Path, **overrides: object) -> TestClient:
    settings = make_settings(tmp_path, audit_token="audit-x", patient_hash_secret="k", **overrides)
    return TestClient(create_app(settings, clock=lambda: NOW))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path) as c:
        yield c


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_rules_version_and_settings_fingerprint(client: TestClient) -> None:
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "reachable"
    assert body["rules_version"] == client.app.state.cds.catalog.version  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{12}", body["settings_fingerprint"])


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    with app_client(tmp_path, database_url=DEAD_DATABASE, database_connect_timeout_seconds=1.0) as c:
        response = c.get("/readyz")
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "database: unreachable" in response.json()["issue"][0]["diagnostics"]


def test_readyz_is_503_when_the_audit_backlog_is_too_large(tmp_path: Path) -> None:
    with app_client(
        tmp_path, database_url=DEAD_DATABASE, database_connect_timeout_seconds=0.5, ready_max_audit_backlog=0
    ) as c:
        assert c.post("/cds-services/hip-weakness", json=hook_request(V01, "hw-v01")).status_code == 200
        c.app.state.cds.audit.writer._wake.set()  # type: ignore[attr-defined]
        for _ in range(50):
            diagnostics = c.get("/readyz").json()["issue"][0]["diagnostics"]
            if "audit backlog" in diagnostics:
                break
        assert "audit backlog 1 above 0" in diagnostics


def test_metrics_count_calls_statuses_cards_prefetch_and_auth_failures(client: TestClient) -> None:
    client.post("/cds-services/hip-weakness", json=hook_request(V01, "hw-v01"))
    client.post("/cds-services/hip-weakness", json=hook_request(None, "hw-v01"))  # 412: nothing obtainable
    client.post("/cds-services/nope", json=hook_request(V01, "hw-v01"))
    text = client.get("/metrics").text
    assert (
        metric(text, "cds_hook_calls_total", service="hip-weakness", hook="patient-view", status="200") == 1
    )
    assert metric(text, "cds_hook_calls_total", service="hip-weakness", status="412") == 1
    assert metric(text, "cds_hook_calls_total", service="unknown", status="404") == 1
    assert metric(text, "cds_cards_total", category="urgent-referral", indicator="critical") == 1
    assert metric(text, "cds_prefetch_keys_total", key="conditions", status="supplied") == 1
    assert metric(text, "cds_hook_duration_seconds_count", service="hip-weakness") == 2
    assert "hw-v01" not in text


def test_metrics_count_fhir_requests_by_outcome(client: TestClient) -> None:
    with respx.mock(base_url=FHIR_BASE) as fhir:
        fhir.get(url__regex=r".*").respond(503)
        client.post("/cds-services/hip-weakness", json=hook_request(None, "hw-v01", fhir_server=FHIR_BASE))
    text = client.get("/metrics").text
    keys = len(default_templates())  # one request per prefetch key (503 is not a refusal: no fallback)
    assert metric(text, "cds_fhir_requests_total", outcome="FhirServerError") == keys
    assert metric(text, "cds_fhir_request_duration_seconds_count") == keys


def test_metrics_count_authentication_failures_by_reason(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([{"iss": "https://ehr.example.org", "jwks": SANDBOX_JWKS}]))
    with app_client(tmp_path, auth="required", trusted_clients_file=clients) as c:
        c.post("/cds-services/hip-weakness", json=hook_request(V01, "hw-v01"))
        c.post(
            "/cds-services/hip-weakness",
            json=hook_request(V01, "hw-v01"),
            headers={"Authorization": "Bearer x"},
        )
        text = c.get("/metrics").text
    assert metric(text, "cds_auth_failures_total", reason="missing") == 1
    assert metric(text, "cds_auth_failures_total", reason="malformed") == 1


def test_metrics_count_feedback_and_audit_records(client: TestClient) -> None:
    card = client.post("/cds-services/hip-weakness", json=hook_request(V01, "hw-v01")).json()["cards"][0]
    client.app.state.cds.audit.writer._wake.set()  # type: ignore[attr-defined]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2026-01-15T12:01:00Z",
                "overrideReason": {"reason": {"system": "s", "code": "c", "display": "d"}},
            }
        ]
    }
    assert client.post("/cds-services/hip-weakness/feedback", json=feedback).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "cds_feedback_entries_total", outcome="overridden") == 1
    assert metric(text, "cds_audit_store_available") == 1


def test_metrics_token_protects_metrics(tmp_path: Path) -> None:
    with app_client(tmp_path, metrics_token="m-secret") as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer m-secret"}).status_code == 200


def test_ops_endpoints_need_no_ehr_token_and_are_not_audited(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([{"iss": "https://ehr.example.org", "jwks": SANDBOX_JWKS}]))
    with app_client(tmp_path, auth="required", trusted_clients_file=clients) as c:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200, path
        c.app.state.cds.audit.writer._wake.set()  # type: ignore[attr-defined]
        listing = c.get("/audit/invocations", headers={"Authorization": "Bearer audit-x"}).json()
    assert listing["items"] == []


def test_the_hook_instance_is_the_correlation_id(client: TestClient) -> None:
    body = hook_request(V01, "hw-v01", hook_instance="a1b2c3d4-0000-4000-8000-000000000001")
    assert (
        client.post("/cds-services/hip-weakness", json=body).headers["x-request-id"] == body["hookInstance"]
    )
    assert client.get("/healthz", headers={"X-Request-ID": "lb-42"}).headers["x-request-id"] == "lb-42"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"}).headers[
        "x-request-id"
    ]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)


def test_json_log_lines_carry_the_correlation_id(client: TestClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        body = hook_request(V01, "hw-v01", hook_instance="a1b2c3d4-0000-4000-8000-000000000002")
        client.post("/cds-services/hip-weakness", json=body)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    call = [line for line in lines if line["message"].startswith("hook call")]
    assert call and all(line["correlation_id"] == body["hookInstance"] for line in call)
    assert {"time", "level", "logger", "correlation_id", "message"} <= set(lines[0])


def test_settings_reference_in_deployment_doc_is_current() -> None:
    document = (ROOT / "docs" / "deployment.md").read_text()
    embedded = document.split(START, 1)[1].split(END, 1)[0].strip()
    assert embedded == settings_reference().strip(), (
        "docs/deployment.md is stale: run `cds-service settings-doc --update docs/deployment.md`"
    )
