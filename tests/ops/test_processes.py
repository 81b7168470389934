"""The service as operators run it: real ``cds-service serve`` processes, several workers, signals."""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import signal
import socket
import sqlite3
from pathlib import Path

import httpx
import pytest
import yaml

from cds_service import NATIVE
from cds_service.catalog import load_catalog
from tests.ops.service_process import AUDIT_TOKEN, run_serve, start_service
from tests.ops.slow_fhir import slow_fhir_server
from tests.support import ROOT, bundle_resources, hook_request, vignette_bundle

SERVICE = load_catalog(ROOT / "rules").service("hip-weakness")

pytestmark = pytest.mark.integration
V01 = bundle_resources(vignette_bundle("V01"))


def one_line_refusal(result) -> str:  # type: ignore[no-untyped-def]
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1 or result.returncode == 2, output
    assert "Traceback" not in output, output
    assert len(output.splitlines()) <= 3, output
    return output


def test_invalid_settings_refuse_to_start_with_one_message(tmp_path: Path) -> None:
    output = one_line_refusal(run_serve(tmp_path / "var", CDS_FHIR_TIME_BUDGET_SECONDS="-1"))
    assert "invalid settings: fhir_time_budget_seconds" in output


def test_invalid_rule_file_refuses_to_start_with_one_message(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / "pathways" / "red-flags" / "rf-ca.yaml"
    data = yaml.safe_load(path.read_text())
    data["when"]["fact"] = "no_such_fact"
    path.write_text(yaml.safe_dump(data))
    output = one_line_refusal(run_serve(tmp_path / "var", CDS_RULES_DIR=str(rules)))
    assert "invalid rule file" in output and "rf-ca.yaml" in output and "no_such_fact" in output


def test_production_without_its_database_refuses_to_start(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(
        json.dumps(
            [
                {
                    "iss": "https://ehr.example.org",
                    "jwks": json.loads((ROOT / "tests/security/keys/sandbox-jwks.json").read_text()),
                }
            ]
        )
    )
    output = one_line_refusal(
        run_serve(
            tmp_path / "var",
            CDS_ENV="production",
            CDS_PUBLIC_BASE_URL="https://cds.example.org",
            CDS_AUTH="required",
            CDS_TRUSTED_CLIENTS_FILE=str(clients),
            CDS_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/nothing",
            CDS_DATABASE_CONNECT_TIMEOUT_SECONDS="1",
        )
    )
    assert "database unreachable" in output and "nobody" not in output.split("database unreachable")[0]


def test_two_workers_metrics_are_summed_and_logs_are_json_with_correlation_ids(tmp_path: Path) -> None:
    service = start_service(tmp_path / "var", workers=2, CDS_LOG_FORMAT="json")
    try:
        assert len(service.worker_pids()) == 2
        with httpx.Client(base_url=service.base, timeout=10) as http:
            instances = []
            for i in range(24):
                body = hook_request(V01, "hw-v01", hook_instance=f"0000aaaa-0000-4000-8000-{i:012d}")
                instances.append(body["hookInstance"])
                # a new connection each time, so both workers answer
                assert httpx.post(f"{service.base}/cds-services/hip-weakness", json=body).status_code == 200
            scrapes = {http.get("/metrics").text for _ in range(8)}
        counts = {
            float(m.group(1))
            for text in scrapes
            for m in [
                re.search(
                    r'cds_hook_calls_total\{hook="patient-view",service="hip-weakness",status="200"\} (\S+)',
                    text,
                )
            ]
            if m
        }
        assert counts == {24.0}, scrapes
    finally:
        assert service.stop() == 0
    lines = [json.loads(line) for line in service.logs().splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in service.logs().splitlines() if x.strip()]), service.logs()[
        -2000:
    ]
    calls = [line for line in lines if line["message"].startswith("hook call")]
    assert sorted(line["correlation_id"] for line in calls) == sorted(instances)
    assert "hw-v01" not in service.logs()


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    """An EHR's connection pool opens its connections at once and keeps them. On uvicorn's shared socket
    one worker could accept the whole burst and serve it alone; each worker has its own socket
    (``cds_service.serving``), so the kernel spreads them (binomially: 40 connections, both workers at
    least 8 fails about once in 10^4 runs)."""
    service = start_service(tmp_path / "var", workers=2)
    connections = [socket.socket() for _ in range(40)]
    try:
        for conn in connections:
            conn.settimeout(10)
            conn.connect(("127.0.0.1", service.port))
        for conn in connections:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: cds\r\n\r\n")
        for conn in connections:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        held = service.connections_per_worker()
        assert len(held) == 2 and sum(held.values()) == len(connections), held
        assert min(held.values()) >= 8, held
    finally:
        for conn in connections:
            conn.close()
        assert service.stop() == 0


def test_sigterm_during_load_fails_no_accepted_call_and_loses_no_audit_record(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with slow_fhir_server(V01, delay=1.0) as fhir:
        service = start_service(
            data_dir, workers=2, CDS_FHIR_TIME_BUDGET_SECONDS="10", CDS_SHUTDOWN_GRACE_SECONDS="20"
        )
        bodies = [
            hook_request(
                None, "hw-v01", fhir_server=fhir.base, hook_instance=f"0000bbbb-0000-4000-8000-{i:012d}"
            )
            for i in range(16)
        ]

        def call(body: dict) -> int:  # type: ignore[type-arg]
            return httpx.post(f"{service.base}/cds-services/hip-weakness", json=body, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(call, body) for body in bodies]
            # every call is in flight: each has asked the slow FHIR server for every prefetch key
            assert fhir.wait_for(len(bodies) * len(SERVICE.prefetch)), "the calls did not reach FHIR"
            service.proc.send_signal(signal.SIGTERM)
            statuses = [f.result() for f in futures]
        assert service.proc.wait(60) == 0
    assert statuses == [200] * len(bodies)
    with sqlite3.connect(data_dir / "cds.sqlite3") as db:
        stored = {row[0] for row in db.execute("SELECT hook_instance FROM audit_invocations")}
    spooled = "".join(p.read_text() for p in (data_dir / "audit-spool").glob("*") if p.is_file())
    missing = [
        b["hookInstance"]
        for b in bodies
        if b["hookInstance"] not in stored and b["hookInstance"] not in spooled
    ]
    assert missing == [], service.logs()[-3000:]
    assert "shutdown" in service.logs().lower()


def test_audit_token_printed_by_make_run_style_start_is_not_needed_by_ops(tmp_path: Path) -> None:
    service = start_service(tmp_path / "var")
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(service.base + path).status_code == 200
        assert httpx.get(service.base + "/audit/stats").status_code == 401
        assert (
            httpx.get(
                service.base + "/audit/stats", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}
            ).status_code
            == 200
        )
    finally:
        service.stop()


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_start_up_log_says_which_engine_runs(tmp_path: Path, mode: str) -> None:
    """Operators see whether the compiled engine is in use (CDS_NATIVE=off, or a stale build, is not)."""
    if mode == "auto" and not NATIVE.active:
        pytest.skip(f"no current compiled build in this environment: {NATIVE.reason}")
    service = start_service(tmp_path / "var", CDS_NATIVE=mode)
    try:
        compiled = f"engine compiled: {len(NATIVE.modules)} modules"
        expected = compiled if mode == "auto" else "engine interpreted: CDS_NATIVE=off"
        assert expected in service.logs(), service.logs()[-2000:]
        assert "compiled engine is not used" not in service.logs()
    finally:
        service.stop()
