"""Two independent instances (processes, ports, data directories) on one PostgreSQL, as behind a load
balancer: a call on one and its feedback on the other meet in one audit record; a token replayed on the
other is refused; both run the same rules and settings, and a rules change is visible and consistent."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.ops.service_process import AUDIT_TOKEN, ServiceProcess, run_serve, start_service
from tests.pg import PostgresServer
from tests.security.helpers import ISS, SERVICE_URL, FrozenClock, KeyRing, Tokens
from tests.support import ROOT, bundle_resources, hook_request, vignette_bundle

pytestmark = pytest.mark.integration
PUBLIC = "https://cds.example.org"
AUDIT = {"Authorization": f"Bearer {AUDIT_TOKEN}"}


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, keys: KeyRing, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cluster")
    clients = root / "clients.json"
    clients.write_text(json.dumps([{"iss": ISS, "jwks": KeyRing.jwks(keys.ec1, keys.rsa1)}]))
    env = {
        "CDS_AUTH": "required",
        "CDS_TRUSTED_CLIENTS_FILE": str(clients),
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_DATABASE_URL": postgres.new_database().replace("postgresql://", "postgresql+psycopg://", 1),
    }
    a = start_service(root / "a", **env)
    b = start_service(root / "b", **env)
    try:
        yield {"a": a, "b": b, "env": env, "root": root}
    finally:
        a.stop()
        b.stop()


def bearer(tokens: Tokens, aud: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.sign(aud=aud)}"}


def wait_for_record(service: ServiceProcess, hook_instance: str, predicate: Any = bool) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = httpx.get(f"{service.base}/audit/invocations/{hook_instance}", headers=AUDIT)
        if response.status_code == 200 and predicate(response.json()):
            record: dict[str, Any] = response.json()
            return record
        time.sleep(0.3)
    raise AssertionError(f"no audit record for {hook_instance} on {service.base}")


def test_call_on_one_instance_and_feedback_on_the_other_meet_in_one_record(
    cluster: dict[str, Any], keys: KeyRing
) -> None:
    tokens = Tokens(keys, FrozenClock(time.time()))
    body = hook_request(
        bundle_resources(vignette_bundle("V01")),
        "hw-v01",
        hook_instance="cccc0000-0000-4000-8000-000000000001",
    )
    answer = httpx.post(
        f"{cluster['a'].base}/cds-services/hip-weakness", json=body, headers=bearer(tokens, SERVICE_URL)
    )
    assert answer.status_code == 200
    card = answer.json()["cards"][0]["uuid"]
    feedback = {
        "feedback": [
            {
                "card": card,
                "outcome": "accepted",
                "outcomeTimestamp": "2026-01-15T12:00:00Z",
                "acceptedSuggestions": [{"id": answer.json()["cards"][0]["suggestions"][0]["uuid"]}],
            }
        ]
    }
    sent = httpx.post(
        f"{cluster['b'].base}/cds-services/hip-weakness/feedback",
        json=feedback,
        headers=bearer(tokens, f"{SERVICE_URL}/feedback"),
    )
    assert sent.status_code == 200, sent.text
    record = wait_for_record(
        cluster["b"], body["hookInstance"], lambda r: any(c.get("feedback") for c in r.get("cards", []))
    )
    fed = next(c for c in record["cards"] if c["uuid"] == card)
    assert fed["feedback"][0]["outcome"] == "accepted"
    assert wait_for_record(cluster["a"], body["hookInstance"])["cards"][0]["uuid"] == card


def test_a_token_replayed_on_the_other_instance_is_refused(cluster: dict[str, Any], keys: KeyRing) -> None:
    tokens = Tokens(keys, FrozenClock(time.time()))
    body = hook_request(bundle_resources(vignette_bundle("V33")), "hw-v33")
    headers = bearer(tokens, SERVICE_URL)
    assert (
        httpx.post(f"{cluster['a'].base}/cds-services/hip-weakness", json=body, headers=headers).status_code
        == 200
    )
    again = httpx.post(f"{cluster['b'].base}/cds-services/hip-weakness", json=body, headers=headers)
    assert again.status_code == 401


def test_instances_agree_on_rules_and_settings_and_a_rules_change_is_consistent(
    cluster: dict[str, Any], keys: KeyRing
) -> None:
    ready = [httpx.get(f"{cluster[name].base}/readyz").json() for name in ("a", "b")]
    assert ready[0]["rules_version"] == ready[1]["rules_version"]
    assert ready[0]["settings_fingerprint"] == ready[1]["settings_fingerprint"]

    rules = cluster["root"] / "rules-next"
    shutil.copytree(ROOT / "rules", rules)
    rule = rules / "pathways" / "hip" / "h-oa.yaml"
    data = yaml.safe_load(rule.read_text())
    data["version"] = "1.0.1"
    rule.write_text(yaml.safe_dump(data, sort_keys=False))
    broken = cluster["root"] / "rules-broken"
    shutil.copytree(rules, broken)
    (broken / "pathways" / "hip" / "h-oa.yaml").write_text("id: H-OA\nwhen: [\n")

    refused = run_serve(cluster["root"] / "d", **{**cluster["env"], "CDS_RULES_DIR": str(broken)})
    assert refused.returncode != 0 and "invalid rule file" in refused.stdout + refused.stderr
    assert httpx.get(f"{cluster['a'].base}/readyz").json()["rules_version"] == ready[0]["rules_version"]

    upgraded = start_service(cluster["root"] / "c", **{**cluster["env"], "CDS_RULES_DIR": str(rules)})
    try:
        version = httpx.get(f"{upgraded.base}/readyz").json()["rules_version"]
        assert version != ready[0]["rules_version"]
        tokens = Tokens(keys, FrozenClock(time.time()))
        body = hook_request(
            bundle_resources(vignette_bundle("V33")),
            "hw-v33",
            hook_instance="cccc0000-0000-4000-8000-000000000003",
        )
        assert (
            httpx.post(
                f"{upgraded.base}/cds-services/hip-weakness", json=body, headers=bearer(tokens, SERVICE_URL)
            ).status_code
            == 200
        )
        record = wait_for_record(cluster["a"], body["hookInstance"])
        assert record["rules_version"] == version
        h_oa = next(r for r in record["trace"]["rules"] if r["id"] == "H-OA")
        assert (h_oa["version"], h_oa["fired"]) == ("1.0.1", True)
    finally:
        upgraded.stop()
