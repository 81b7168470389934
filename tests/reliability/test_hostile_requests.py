"""Every hostile request of the corpus (``hostile.py``) gets a clear 4xx, or a 200 that either still
carries the red flag or whose trace (the audit record of that very call) names what could not be read.
Never a 500, never a silently missed red flag. Request size limits are checked here too (413)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.main import create_app
from cds_service.schemas import Action, CdsResponse
from tests.audit.conftest import flush
from tests.conftest import make_settings
from tests.reliability import secret_scan
from tests.reliability.conftest import COUNTS
from tests.reliability.hostile import (
    CORPUS,
    Flagged,
    FlaggedOrNamed,
    Hostile,
    Refused,
    SameAs,
    encode,
    request,
)
from tests.support import NOW, categories, counter_ids

AUDIT_TOKEN = "hostile-audit-token-0e9d7c"
AUDIT = {"Authorization": f"Bearer {AUDIT_TOKEN}"}
DEFAULT_INSTANCE = b"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    secret_scan.register(AUDIT_TOKEN)
    settings = make_settings(
        tmp_path_factory.mktemp("hostile"), audit_token=AUDIT_TOKEN, patient_hash_secret="hostile-hash-key"
    )
    app = create_app(settings, clock=lambda: NOW, id_factory=counter_ids())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, path: str, body: bytes, content_type: str | None, **headers: str) -> Any:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(path, content=body, headers=headers)


def with_instance(body: bytes, number: int) -> tuple[bytes, str]:
    """The body with its own hookInstance, to find the call's audit record."""
    instance = f"hostile-{number:04d}-0000-4000-8000-000000000000"[: len(DEFAULT_INSTANCE)]
    return body.replace(DEFAULT_INSTANCE, instance.encode()), instance


def trace_of(client: TestClient, instance: str) -> dict[str, Any]:
    flush(client)
    detail = client.get(f"/audit/invocations/{instance}", headers=AUDIT)
    assert detail.status_code == 200, detail.text
    trace: dict[str, Any] = detail.json()["trace"]
    return trace


def is_flagged(answer: dict[str, Any]) -> bool:
    return any(
        c["indicator"] == "critical" and c["source"]["topic"]["code"] == "urgent-referral"
        for c in answer["cards"]
    )


def named(trace: dict[str, Any], ref: str) -> bool:
    return any(u["resource"] == ref and u["could_hide_red_flag"] for u in trace["unreadable"]) or any(
        n["resource"] == ref and n["could_hide_red_flag"] for n in trace["notes"]
    )


def assert_printable(answer: dict[str, Any]) -> None:
    """EHR text shown on cards never carries control or format characters (bidi overrides, NUL...)."""
    for card in answer["cards"]:
        for text in (card["summary"], card.get("detail", "")):
            bad = [ch for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs")]
            assert not bad, f"card text holds {bad[:5]!r}"


@pytest.mark.parametrize("number", range(len(CORPUS)), ids=[h.name for h in CORPUS])
def test_hostile_request(client: TestClient, number: int) -> None:
    case: Hostile = CORPUS[number]
    COUNTS["hostile inputs"] += 1
    body, instance = with_instance(case.body, number)
    response = post(client, f"/cds-services/{case.service}", body, case.content_type, **case.headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:  # cards name the patient (orders); error bodies name nobody
        secret_scan.assert_clean(response.text, "error body")
    if b'"fhirServer"' not in body and b'"fhirAuthorization"' not in body:  # explain drops those two
        explained = post(client, f"/explain/{case.service}", body, case.content_type, **AUDIT)
        assert explained.status_code == response.status_code, (
            "explain must read the body as the hook call does"
        )

    if isinstance(case.expect, Refused):
        assert response.status_code == case.expect.status, response.text
        assert response.headers["content-type"] == FHIR_JSON
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"]
        if case.expect.expression:
            expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
            assert any(e.startswith(case.expect.expression) for e in expressions), outcome
        return

    assert response.status_code == 200, response.text
    answer = response.json()
    CdsResponse.model_validate(answer)
    assert_printable(answer)
    if isinstance(case.expect, Flagged):
        assert is_flagged(answer), answer
    elif isinstance(case.expect, FlaggedOrNamed):
        if not is_flagged(answer):
            trace = trace_of(client, instance)
            missing = [ref for ref in case.expect.refs if not named(trace, ref)]
            assert not missing, f"red flag lost and {missing} not named in the trace: {trace['unreadable']}"
            assert case.expect.refs, "red flag lost and nothing named"
            if answer["cards"]:
                assert "could hide a red flag" in answer["cards"][0]["detail"]
    elif isinstance(case.expect, SameAs):
        other, _ = with_instance(case.expect.body, number + 10_000)
        reference = post(client, f"/cds-services/{case.service}", other, "application/json")
        assert reference.status_code == 200
        assert categories(answer) == categories(reference.json())
        assert [c["indicator"] for c in answer["cards"]] == [
            c["indicator"] for c in reference.json()["cards"]
        ]


# -- request size -----------------------------------------------------------------------------------------

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("limit"), max_request_bytes=LIMIT, audit_token=AUDIT_TOKEN
    )
    with TestClient(create_app(settings, clock=lambda: NOW), raise_server_exceptions=False) as test_client:
        yield test_client


def padded(size: int) -> bytes:
    """A valid V01 request of exactly ``size`` bytes (padding in an ignored extension)."""
    body = encode(request("V01"))
    filler = size - len(body) - len(b',"extension":{"pad":""}')
    assert filler >= 0
    return body[:-1] + b',"extension":{"pad":"' + b"x" * filler + b'"}}'


@pytest.mark.parametrize(
    "path", ["/cds-services/hip-weakness", "/explain/hip-weakness", "/cds-services/hip-weakness/feedback"]
)
def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(
    small_limit: TestClient, path: str
) -> None:
    big = padded(LIMIT + 1)
    declared = small_limit.post(path, content=big, headers={"Content-Type": "application/json", **AUDIT})
    streamed = small_limit.post(
        path, content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]), headers={**AUDIT}
    )
    for response in (declared, streamed):
        COUNTS["hostile inputs"] += 1
        assert response.status_code == 413, response.text
        assert response.json()["issue"][0]["code"] == "too-long"


def test_a_body_of_exactly_the_limit_is_read(small_limit: TestClient) -> None:
    COUNTS["hostile inputs"] += 1
    response = small_limit.post(
        "/cds-services/hip-weakness", content=padded(LIMIT), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert is_flagged(response.json())


def test_a_content_length_that_lies_small_is_still_cut_at_the_limit(small_limit: TestClient) -> None:
    """The declared length is only a shortcut: the bytes actually read are counted."""
    COUNTS["hostile inputs"] += 1
    big = padded(LIMIT * 4)
    response = small_limit.post(
        "/cds-services/hip-weakness",
        content=iter([big]),
        headers={"Content-Type": "application/json", "Content-Length": "100"},
    )
    assert response.status_code in (400, 413)
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_corpus_is_kept_in_the_repository() -> None:
    """The corpus is code in tests/ (hostile.py), reviewed like the rest."""
    assert Path(__file__).with_name("hostile.py").exists()
    assert len(CORPUS) >= 200


def test_a_model_the_service_itself_fails_to_build_is_a_500_not_the_callers_fault(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the caller's input is answered 400: our own response model refusing what we built is a bug,
    answered 500 (and logged) so that the EHR does not blame, or retry with, a request that was fine."""

    def broken_cards(*_: Any, **__: Any) -> Any:
        return Action(type="delete", description="x", resourceId="not a reference")

    monkeypatch.setattr("cds_service.orchestrate.build_cards", broken_cards)
    response = post(client, "/cds-services/hip-weakness", encode(request("V01")), "application/json")
    assert response.status_code == 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "resourceId" not in response.text
