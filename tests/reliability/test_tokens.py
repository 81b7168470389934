"""Bad EHR tokens against the service as deployed: ``cds-service serve --workers 2`` in its own process,
authentication required, keys fetched over HTTP from the client's JWKS URL (a real local server).

Every bad token is refused with 401 and an OperationOutcome that says nothing more than "Authentication
required"; valid ES384 and RS384 tokens (and clocks a few seconds apart) are accepted. A token is good
once: replayed to the same two-worker process, or to a second process sharing the database (behind one
public URL, as behind a load balancer), it is refused, on SQLite and on PostgreSQL. The audit and explain
endpoints refuse anything but the audit token. No token reaches the processes' logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cds_service.security.failures import DESCRIPTIONS
from tests.pg import PostgresServer
from tests.reliability import secret_scan
from tests.reliability.conftest import COUNTS
from tests.reliability.faulty_fhir import FaultyServer
from tests.reliability.servers import ServiceProcess, start_service
from tests.security.helpers import (
    DISCOVERY_URL,
    DROP,
    ISS,
    SERVICE_URL,
    FrozenClock,
    KeyRing,
    Tokens,
    b64url,
)
from tests.support import bundle_resources, hook_request, vignette_bundle

PUBLIC_URL = "https://cds.example.org"  # CDS_PUBLIC_BASE_URL of every process: the aud of the tokens
AUDIT_TOKEN = "tokens-audit-token-2f6e90aa"
HASH_KEY = "tokens-hash-key-118c"
HOOK = "/cds-services/hip-weakness"
FEEDBACK_URL = f"{SERVICE_URL}/feedback"
V01 = hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01")


def environment(workdir: Path, jwks_server: FaultyServer, database_url: str | None = None) -> dict[str, str]:
    clients = workdir / "trusted-clients.json"
    clients.write_text(
        json.dumps(
            [{"iss": ISS, "jwks_url": jwks_server.jwks_url(), "jku_allowed": [jwks_server.jwks_url()]}]
        )
    )
    env = {
        "CDS_ENV": "test",
        "CDS_AUTH": "required",
        "CDS_TRUSTED_CLIENTS_FILE": str(clients),
        "CDS_PUBLIC_BASE_URL": PUBLIC_URL,
        "CDS_DATA_DIR": str(workdir / "var"),
        "CDS_AUDIT_TOKEN": AUDIT_TOKEN,
        "CDS_PATIENT_HASH_SECRET": HASH_KEY,
    }
    if database_url:
        env["CDS_DATABASE_URL"] = database_url
    return env


@dataclass
class Pair:
    """Two processes sharing one database: A with 2 workers, B with 1."""

    a: ServiceProcess
    b: ServiceProcess


def started_pair(workdir: Path, jwks_server: FaultyServer, database_url: str | None = None) -> Pair:
    secret_scan.register(AUDIT_TOKEN, HASH_KEY)
    env = environment(workdir, jwks_server, database_url)
    a = start_service(workdir / "a", env, workers=2)
    try:
        b = start_service(workdir / "b", env, workers=1)
    except BaseException:
        a.stop()
        raise
    return Pair(a, b)


def stopped(pair: Pair) -> None:
    for service in (pair.a, pair.b):
        service.stop()
        text = service.log.read_text(errors="replace")
        secret_scan.add_text(f"cds-service process log {service.log.name}", text)


@pytest.fixture(scope="module")
def sqlite_pair(tmp_path_factory: pytest.TempPathFactory, jwks_server: FaultyServer) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("tokens-sqlite")
    shared = workdir / "shared.sqlite3"
    pair = started_pair(workdir, jwks_server, f"sqlite:///{shared}")
    yield pair
    stopped(pair)


@pytest.fixture
def tokens(keys: KeyRing) -> Tokens:
    """Tokens minted at the real time (the processes check them against their own clock)."""
    return Tokens(keys, FrozenClock(time.time()))


def registered(token: str | None) -> str | None:
    secret_scan.register(token)
    return token


def post(service: ServiceProcess, authorization: str | None, path: str = HOOK) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(timeout=20) as http:  # a new connection each time: any worker may answer
        return http.post(f"{service.url}{path}", json=V01, headers=headers)


def assert_401(response: httpx.Response, reason: str = "missing", authorization: str | None = None) -> None:
    """401 saying which check failed (RFC 6750), the same words in the OperationOutcome, never the token."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/fhir+json"
    header = response.headers["www-authenticate"]
    if reason == "missing":
        assert header == "Bearer"
        diagnostics = "Authentication required"
    else:
        description = DESCRIPTIONS.get(reason, reason)  # a reason key, or the description itself
        assert header.startswith(f'Bearer error="invalid_token", error_description="{description}')
        diagnostics = f"Authentication failed: {header.split('error_description=', 1)[1].strip(chr(34))}"
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "security", "diagnostics": diagnostics}],
    }
    token = (authorization or "").removeprefix("Bearer ").strip()
    if len(token) > 8:
        assert token not in header and token not in response.text


# -- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    build: Callable[[Tokens, KeyRing, FaultyServer], str | None]  # the Authorization header
    reason: str  # what the process logs (``client JWT rejected: reason=...``): refused for the right cause
    discovery: bool = False  # sent to GET /cds-services instead of the hook


def bearer(token: str) -> str:
    return f"Bearer {registered(token)}"


def _tampered(t: Tokens, k: KeyRing, s: FaultyServer) -> str:
    header, _, signature = t.sign().split(".")
    other = b64url(json.dumps(t.claims(jti="forged-claims")).encode())
    return bearer(f"{header}.{other}.{signature}")


NOW_S = lambda t: int(t.clock())  # noqa: E731  the tokens' "now"

BAD: dict[str, Bad] = {
    "no token": Bad(lambda t, k, s: None, "missing"),
    "empty header": Bad(lambda t, k, s: "", "missing"),
    "Basic credentials": Bad(lambda t, k, s: "Basic dXNlcjpwYXNz", "malformed"),
    "Bearer and garbage": Bad(lambda t, k, s: "Bearer not.a.jwt", "malformed"),
    "two tokens in one header": Bad(lambda t, k, s: f"Bearer {t.sign()} {t.sign()}", "malformed"),
    "20 KB token": Bad(lambda t, k, s: "Bearer " + "a" * 20_000, "malformed"),
    "HS256 signed with the public key": Bad(
        lambda t, k, s: bearer(
            t.forge({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}, hmac_secret=k.ec1.public_pem)
        ),
        "alg-not-allowed",
    ),
    "alg none": Bad(
        lambda t, k, s: bearer(t.forge({"alg": "none", "typ": "JWT", "kid": "ec-1"})), "alg-not-allowed"
    ),
    "alg RS256 (not allowed for the client)": Bad(
        lambda t, k, s: bearer(t.sign(k.rsa1, alg="RS256")), "alg-not-allowed"
    ),
    "typ at+jwt": Bad(lambda t, k, s: bearer(t.sign(header={"typ": "at+jwt"})), "typ"),
    "no typ": Bad(lambda t, k, s: bearer(t.sign(header={"typ": DROP})), "typ"),
    "no kid": Bad(lambda t, k, s: bearer(t.sign(header={"kid": DROP})), "missing-kid"),
    "wrong kid": Bad(lambda t, k, s: bearer(t.sign(header={"kid": "no-such-key"})), "unknown-kid"),
    "unknown iss": Bad(lambda t, k, s: bearer(t.sign(iss="https://rogue.example.org")), "unknown-iss"),
    "no iss": Bad(lambda t, k, s: bearer(t.sign(iss=DROP)), "missing-claim"),
    "wrong aud: the discovery token on the service URL": Bad(
        lambda t, k, s: bearer(t.sign(aud=DISCOVERY_URL)), "bad-aud"
    ),
    "wrong aud: the service token on discovery": Bad(
        lambda t, k, s: bearer(t.sign(aud=SERVICE_URL)), "bad-aud", discovery=True
    ),
    "wrong aud: the feedback token on the service URL": Bad(
        lambda t, k, s: bearer(t.sign(aud=FEEDBACK_URL)), "bad-aud"
    ),
    "wrong aud: another host": Bad(
        lambda t, k, s: bearer(t.sign(aud="https://evil.example.org/cds-services/hip-weakness")), "bad-aud"
    ),
    "no aud": Bad(lambda t, k, s: bearer(t.sign(aud=DROP)), "missing-claim"),
    "expired": Bad(lambda t, k, s: bearer(t.sign(iat=NOW_S(t) - 400, exp=NOW_S(t) - 100)), "expired"),
    "iat in the future": Bad(
        lambda t, k, s: bearer(t.sign(iat=NOW_S(t) + 120, exp=NOW_S(t) + 400)), "iat-future"
    ),
    "nbf in the future": Bad(lambda t, k, s: bearer(t.sign(nbf=NOW_S(t) + 120)), "nbf-future"),
    "no exp": Bad(lambda t, k, s: bearer(t.sign(exp=DROP)), "missing-claim"),
    "lifetime over an hour": Bad(lambda t, k, s: bearer(t.sign(exp=NOW_S(t) + 7200)), "lifetime-too-long"),
    "missing jti": Bad(lambda t, k, s: bearer(t.sign(jti=DROP)), "missing-claim"),
    "jti not a string": Bad(lambda t, k, s: bearer(t.sign(jti=42)), "malformed"),
    "wrong signature: another key with the same kid": Bad(
        lambda t, k, s: bearer(t.sign(k.impostor)), "bad-signature"
    ),
    "wrong signature: claims swapped": Bad(_tampered, "bad-signature"),
    "wrong signature: last byte changed": Bad(lambda t, k, s: bearer(_flip(t.sign())), "bad-signature"),
    "jku not on the allow list": Bad(
        lambda t, k, s: bearer(t.sign(header={"jku": "https://evil.example.org/jwks.json"})),
        "jku-not-allowed",
    ),
    "jku: the allowed URL with a suffix": Bad(
        lambda t, k, s: bearer(t.sign(header={"jku": s.jwks_url() + "?x=1"})), "jku-not-allowed"
    ),
}


def _flip(token: str) -> str:
    head, body, signature = token.split(".")
    last = "A" if signature[-2] != "A" else "B"
    return f"{head}.{body}.{signature[:-2]}{last}{signature[-1]}"


@pytest.mark.parametrize("name", list(BAD))
def test_bad_token_is_401(
    sqlite_pair: Pair, tokens: Tokens, keys: KeyRing, jwks_server: FaultyServer, name: str
) -> None:
    COUNTS["token cases"] += 1
    case = BAD[name]
    authorization = case.build(tokens, keys, jwks_server)
    logged = f"client JWT rejected: reason={case.reason} "
    before = sqlite_pair.a.log_text().count(logged)
    if case.discovery:
        with httpx.Client(timeout=20) as http:
            headers = {"Authorization": authorization} if authorization is not None else {}
            response = http.get(f"{sqlite_pair.a.url}/cds-services", headers=headers)
    else:
        response = post(sqlite_pair.a, authorization)
    assert_401(response, case.reason, authorization)
    deadline = time.monotonic() + 5
    while sqlite_pair.a.log_text().count(logged) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sqlite_pair.a.log_text().count(logged) > before, f"not refused as {case.reason}"


GOOD: dict[str, Callable[[Tokens, KeyRing, FaultyServer], str]] = {
    "ES384": lambda t, k, s: t.sign(k.ec1),
    "RS384": lambda t, k, s: t.sign(k.rsa1),
    "with the allowed jku": lambda t, k, s: t.sign(header={"jku": s.jwks_url()}),
    "EHR clock 5 s ahead (iat and nbf in the future)": lambda t, k, s: t.sign(
        iat=NOW_S(t) + 5, nbf=NOW_S(t) + 5, exp=NOW_S(t) + 305
    ),
    "EHR clock 5 s behind, a token that just expired": lambda t, k, s: t.sign(
        iat=NOW_S(t) - 65, exp=NOW_S(t) - 5
    ),
    "aud with a trailing slash": lambda t, k, s: t.sign(aud=SERVICE_URL + "/"),
}


@pytest.mark.parametrize("name", list(GOOD))
def test_valid_token_is_accepted(
    sqlite_pair: Pair, tokens: Tokens, keys: KeyRing, jwks_server: FaultyServer, name: str
) -> None:
    COUNTS["token cases"] += 1
    response = post(sqlite_pair.a, bearer(GOOD[name](tokens, keys, jwks_server)))
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["indicator"] == "critical"


def test_discovery_takes_its_own_token(sqlite_pair: Pair, tokens: Tokens) -> None:
    COUNTS["token cases"] += 1
    with httpx.Client(timeout=20) as http:
        assert http.get(f"{sqlite_pair.a.url}/cds-services").status_code == 200
        headers = {"Authorization": bearer(tokens.sign(aud=DISCOVERY_URL))}
        assert http.get(f"{sqlite_pair.a.url}/cds-services", headers=headers).status_code == 200


# -- replay -------------------------------------------------------------------------------------------------


def replay_checks(pair: Pair, tokens: Tokens) -> None:
    # within one process of two workers: whichever worker gets the copies, they are refused
    token = bearer(tokens.sign())
    assert post(pair.a, token).status_code == 200
    for _ in range(6):
        assert_401(post(pair.a, token), "replay", token)
    # across processes sharing the database, both ways
    token = bearer(tokens.sign())
    assert post(pair.a, token).status_code == 200
    assert_401(post(pair.b, token), "replay", token)
    token = bearer(tokens.sign())
    assert post(pair.b, token).status_code == 200
    for _ in range(4):
        assert_401(post(pair.a, token), "replay", token)
    # a replay refused does not burn a fresh token
    assert post(pair.b, bearer(tokens.sign())).status_code == 200


def test_a_replayed_jti_is_refused_by_every_worker_and_process_sharing_sqlite(
    sqlite_pair: Pair, tokens: Tokens
) -> None:
    COUNTS["token cases"] += 1
    replay_checks(sqlite_pair, tokens)


@pytest.mark.integration
def test_a_replayed_jti_is_refused_by_every_worker_and_process_sharing_postgresql(
    tmp_path_factory: pytest.TempPathFactory,
    jwks_server: FaultyServer,
    postgres: PostgresServer,
    tokens: Tokens,
) -> None:
    COUNTS["token cases"] += 1
    pair = started_pair(tmp_path_factory.mktemp("tokens-pg"), jwks_server, postgres.new_database())
    try:
        replay_checks(pair, tokens)
    finally:
        stopped(pair)


# -- the reviewers' credential ------------------------------------------------------------------------------

REVIEWER_ENDPOINTS = [
    ("GET", "/audit/invocations"),
    ("GET", "/audit/invocations/some-hook-instance"),
    ("GET", "/audit/stats"),
    ("POST", "/explain/hip-weakness"),
]


@pytest.mark.parametrize(("method", "path"), REVIEWER_ENDPOINTS)
def test_audit_and_explain_refuse_anything_but_the_audit_token(
    sqlite_pair: Pair, tokens: Tokens, method: str, path: str
) -> None:
    COUNTS["token cases"] += 1
    ehr_jwt = tokens.sign(aud=f"{PUBLIC_URL}{path}")
    refused: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {AUDIT_TOKEN}x"},
        {"Authorization": f"Bearer {AUDIT_TOKEN[:-1]}"},
        {"Authorization": f"Basic {AUDIT_TOKEN}"},
        {"Authorization": f"Bearer {registered(ehr_jwt)}"},  # the EHR's credential is not the reviewers'
        {"X-Audit-Token": AUDIT_TOKEN},
    ]
    with httpx.Client(timeout=20) as http:
        for headers in refused:
            response = http.request(method, f"{sqlite_pair.a.url}{path}", json=V01, headers=headers)
            sent = headers.get("Authorization", "")
            wrong = "the bearer token is not the audit token" if sent.startswith("Bearer ") else "missing"
            assert_401(response, wrong, sent or None)
        accepted = http.request(
            method, f"{sqlite_pair.a.url}{path}", json=V01, headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}
        )
    assert accepted.status_code in (200, 404), accepted.text  # 404: no such hookInstance (yet)


def test_no_token_reaches_the_process_logs(sqlite_pair: Pair, tokens: Tokens) -> None:
    COUNTS["token cases"] += 1
    token = bearer(tokens.sign())
    post(sqlite_pair.a, token)
    post(sqlite_pair.a, token)  # the replay is logged as a rejection
    post(sqlite_pair.a, bearer(tokens.sign(aud=DISCOVERY_URL)))
    expected = ("client JWT rejected: reason=replay", "client JWT rejected: reason=bad-aud")
    deadline = time.monotonic() + 60  # the worker's log lines reach the file when it flushes them
    while not all(line in (text := sqlite_pair.a.log_text()) for line in expected):
        assert time.monotonic() < deadline, f"log lines missing: {expected}"
        time.sleep(0.1)
    assert token.removeprefix("Bearer ") not in text and token.rsplit(".", 1)[1] not in text
    assert AUDIT_TOKEN not in text and HASH_KEY not in text
