"""JWT authentication as an EHR sees it: 401 with an OperationOutcome and no detail; aud is the URL called."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds_service.main import create_app
from tests.conftest import make_settings
from tests.security.helpers import (
    DISCOVERY_URL,
    ISS,
    SERVICE_URL,
    FrozenClock,
    KeyRing,
    Tokens,
)
from tests.support import bundle_resources, categories, hook_request, vignette_bundle

V01 = hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01")


@pytest.fixture
def tokens(keys: KeyRing) -> Tokens:
    return Tokens(keys, FrozenClock(time.time()))


@pytest.fixture
def secured(tmp_path: Path, keys: KeyRing) -> Iterator[TestClient]:
    clients = tmp_path / "clients.json"
    clients.write_text(
        json.dumps(
            [
                {
                    "iss": ISS,
                    "jwks": KeyRing.jwks(keys.ec1, keys.rsa1),
                    "fhir_servers": ["https://ehr.example.org/fhir"],
                }
            ]
        )
    )
    settings = make_settings(
        tmp_path, auth="required", trusted_clients_file=clients, public_base_url="https://cds.example.org"
    )
    with TestClient(create_app(settings)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_401(response, reason: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """401 with RFC 6750's header: plain ``Bearer`` without a token, else ``invalid_token`` and the reason
    (``reason``: words the description must contain), the same words in the OperationOutcome."""
    assert response.status_code == 401
    header = response.headers["www-authenticate"]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    diagnostics = body["issue"][0]["diagnostics"]
    if reason is None:
        assert header == "Bearer"
        assert diagnostics == "Authentication required"
        return
    assert header.startswith('Bearer error="invalid_token", error_description="')
    assert reason in header
    assert diagnostics.startswith("Authentication failed: ") and reason in diagnostics


def test_no_token_is_401(secured: TestClient) -> None:
    assert_401(secured.post("/cds-services/hip-weakness", json=V01))


@pytest.mark.parametrize("which", ["ec1", "rsa1"])
def test_valid_es384_and_rs384_tokens_are_accepted(
    secured: TestClient, tokens: Tokens, keys: KeyRing, which: str
) -> None:
    response = secured.post(
        "/cds-services/hip-weakness", json=V01, headers=bearer(tokens.sign(getattr(keys, which)))
    )
    assert response.status_code == 200
    assert categories(response.json()) == ["urgent-referral"]


def test_discovery_token_used_on_a_service_url_is_401(secured: TestClient, tokens: Tokens) -> None:
    token = tokens.sign(aud=DISCOVERY_URL)
    response = secured.post("/cds-services/hip-weakness", json=V01, headers=bearer(token))
    assert_401(
        response,
        f"audience mismatch: the JWT aud must be the exact URL called (this endpoint expects {SERVICE_URL})",
    )
    assert token not in response.headers["www-authenticate"] and token not in response.text


def test_service_token_used_on_discovery_is_401(secured: TestClient, tokens: Tokens) -> None:
    assert_401(
        secured.get("/cds-services", headers=bearer(tokens.sign(aud=SERVICE_URL))), "audience mismatch"
    )


def test_discovery_is_public_without_a_token_and_verified_with_one(
    secured: TestClient, tokens: Tokens
) -> None:
    assert secured.get("/cds-services").status_code == 200
    assert secured.get("/cds-services", headers=bearer(tokens.sign(aud=DISCOVERY_URL))).status_code == 200


def test_replayed_token_is_401(secured: TestClient, tokens: Tokens) -> None:
    token = tokens.sign()
    assert secured.post("/cds-services/hip-weakness", json=V01, headers=bearer(token)).status_code == 200
    assert_401(secured.post("/cds-services/hip-weakness", json=V01, headers=bearer(token)), "already used")


def test_expired_token_is_401(secured: TestClient, tokens: Tokens) -> None:
    past = int(time.time()) - 3600
    assert_401(
        secured.post(
            "/cds-services/hip-weakness", json=V01, headers=bearer(tokens.sign(iat=past, exp=past + 300))
        ),
        "expired",
    )


def test_fhir_server_not_registered_for_the_client_is_not_fetched(
    secured: TestClient, tokens: Tokens
) -> None:
    body = hook_request(None, "hw-v01", fhir_server="https://attacker.example.com/fhir", token="abc")
    response = secured.post("/cds-services/hip-weakness", json=body, headers=bearer(tokens.sign()))
    assert response.status_code == 412
    assert "not registered for this CDS client" in response.text


def test_production_refuses_to_start_without_trusted_clients(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from cds_service.config import Settings

    with pytest.raises(ValidationError, match="CDS_TRUSTED_CLIENTS_FILE"):
        Settings(env="production", auth="required", audit_token="x", patient_hash_secret="y")
    with pytest.raises(ValidationError, match="CDS_AUTH=off is not allowed"):
        Settings(env="production", auth="off", audit_token="x", patient_hash_secret="y")


@pytest.mark.parametrize("url", [None, "http://cds.example.org"])
def test_production_refuses_to_derive_the_jwt_audience_from_the_host_header(
    tmp_path: Path, url: str | None
) -> None:
    """Without a configured https base URL the expected ``aud`` would follow the request's Host header,
    so a token issued to another CDS service could be replayed here by sending that service's Host."""
    from pydantic import ValidationError

    from cds_service.config import Settings

    clients = tmp_path / "clients.json"
    clients.write_text("[]")

    def production(base_url: str | None) -> Settings:
        return Settings(
            env="production",
            public_base_url=base_url,
            audit_token="x",
            patient_hash_secret="y",
            trusted_clients_file=clients,
        )

    with pytest.raises(ValidationError, match="CDS_PUBLIC_BASE_URL"):
        production(url)
    assert production("https://cds.example.org").public_base_url


def test_an_empty_public_base_url_means_unset_outside_production() -> None:
    from cds_service.config import Settings

    assert Settings(env="development", public_base_url="").public_base_url is None


def test_an_unknown_issuer_is_named_and_the_log_says_which_audience_was_expected(
    secured: TestClient, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    assert_401(
        secured.post(
            "/cds-services/hip-weakness", json=V01, headers=bearer(tokens.sign(iss="https://other.example"))
        ),
        "unknown issuer",
    )
    caplog.set_level(logging.WARNING, logger="cds_service")
    wrong = "http://localhost:8080/cds-services/hip-weakness"
    secured.post("/cds-services/hip-weakness", json=V01, headers=bearer(tokens.sign(aud=wrong)))
    assert f"configured {SERVICE_URL}, received '{wrong}'" in caplog.text
