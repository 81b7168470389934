"""The CDS client's JWKS endpoint down, slow, broken or rotating its keys, and clocks a few seconds apart.

The service runs as a real HTTP server (uvicorn in a thread, authentication required) and fetches each
client's key set over HTTP from ``faulty_fhir.FaultyServer``. Each fault is its own trusted client (its
own ``iss`` and JWKS URL), so every test starts with a cold cache. The JWKS fetch timeout is 1 s: a token
is answered (401 when no key is known) within that plus a 1 s margin, whatever the endpoint does.

Time passing (a cache that expires, the 30 s pause between key-set refetches) is simulated by giving the
service's authenticator a clock the test moves; tokens are minted on the same clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cds_service.main import create_app
from cds_service.security import ClientAuthenticator, load_trusted_clients
from tests.conftest import make_settings
from tests.reliability import secret_scan
from tests.reliability.conftest import COUNTS
from tests.reliability.faulty_fhir import JWKS_FAULTS, FaultyServer
from tests.reliability.servers import ServiceThread
from tests.security.helpers import KeyRing, Tokens
from tests.support import bundle_resources, hook_request, vignette_bundle

JWKS_TIMEOUT = 1.0
MARGIN = 1.0
PUBLIC_URL = "https://cds.example.org"
SERVICE_URL = f"{PUBLIC_URL}/cds-services/hip-weakness"
CONCURRENT_ISS = "https://ehr-concurrent.example.org"  # its own (hanging) key set URL: a cold cache
V01 = hook_request(bundle_resources(vignette_bundle("V01")), "hw-v01")


class MovableClock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def iss_of(fault: str) -> str:
    return f"https://ehr-{fault}.example.org"


@pytest.fixture(scope="module")
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, jwks_server: FaultyServer, clock: MovableClock
) -> Iterator[ServiceThread]:
    workdir = tmp_path_factory.mktemp("jwks")
    clients = workdir / "clients.json"
    entries = [{"iss": iss_of(fault), "jwks_url": jwks_server.jwks_url(fault)} for fault in JWKS_FAULTS]
    entries.append({"iss": CONCURRENT_ISS, "jwks_url": jwks_server.jwks_url("hang") + "?concurrent"})
    clients.write_text(json.dumps(entries))
    settings = make_settings(
        workdir,
        auth="required",
        trusted_clients_file=clients,
        public_base_url=PUBLIC_URL,
        jwks_timeout_seconds=JWKS_TIMEOUT,
        jwks_cache_seconds=3600,
    )
    app = create_app(settings)
    with ServiceThread(app) as running:
        state = app.state.cds
        state.authenticator = ClientAuthenticator(  # as create_app builds it, on the test's clock
            load_trusted_clients(clients),
            state.http,
            state.audit.replay_cache,
            leeway_seconds=settings.jwt_leeway_seconds,
            max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
            jwks_cache_seconds=settings.jwks_cache_seconds,
            jwks_timeout_seconds=settings.jwks_timeout_seconds,
            clock=clock,
        )
        yield running


@pytest.fixture
def tokens(keys: KeyRing, clock: MovableClock) -> Tokens:
    return Tokens(keys, clock)  # type: ignore[arg-type]  # duck-typed clock


def call(service: ServiceThread, token: str) -> tuple[int, float]:
    secret_scan.register(token)
    started = time.monotonic()
    with httpx.Client(timeout=JWKS_TIMEOUT + 10) as http:
        response = http.post(
            f"{service.url}/cds-services/hip-weakness", json=V01, headers={"Authorization": f"Bearer {token}"}
        )
    return response.status_code, time.monotonic() - started


def within_timeout(service: ServiceThread, tokens: Tokens) -> float:
    """The longest a call may take: the JWKS timeout, plus what a call with a good token (cached keys)
    takes right now (a busy machine moves the bound with it), plus a margin for the hand-over."""
    status, work = call(service, tokens.sign(iss=iss_of("ok")))
    assert status == 200
    return JWKS_TIMEOUT + work + MARGIN


@pytest.mark.parametrize("fault", ["down", "hang", "drip", "slow", "malformed", "no-keys"])
def test_an_unusable_key_set_is_401_within_the_jwks_timeout(
    service: ServiceThread, tokens: Tokens, fault: str
) -> None:
    COUNTS["fault cases"] += 1
    status, seconds = call(service, tokens.sign(iss=iss_of(fault)))
    assert status == 401
    bound = within_timeout(service, tokens)
    assert seconds <= bound, f"answered after {seconds:.2f} s (bound {bound:.2f} s)"


def test_twenty_tokens_while_the_key_set_hangs_share_one_fetch_and_all_end_in_time(
    service: ServiceThread, tokens: Tokens, jwks_server: FaultyServer
) -> None:
    COUNTS["fault cases"] += 1
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: call(service, tokens.sign(iss=CONCURRENT_ISS)), range(20)))
    assert {status for status, _ in results} == {401}
    with ThreadPoolExecutor(20) as pool:  # the same twenty calls with a good token, in the same run
        good = list(pool.map(lambda _: call(service, tokens.sign(iss=iss_of("ok"))), range(20)))
    assert {status for status, _ in good} == {200}
    work = max(seconds for _, seconds in good)
    assert max(seconds for _, seconds in results) <= JWKS_TIMEOUT + work + MARGIN
    fetches = [s for s in jwks_server.requests("hang") if s.query == "concurrent"]
    assert len(fetches) == 1, "concurrent tokens share one fetch"
    # and a stream of tokens right after cannot make the service hammer the client's endpoint
    for _ in range(5):
        assert call(service, tokens.sign(iss=CONCURRENT_ISS))[0] == 401
    assert len([s for s in jwks_server.requests("hang") if s.query == "concurrent"]) == 1


def test_an_endpoint_that_goes_down_keeps_the_cached_keys(
    service: ServiceThread, tokens: Tokens, jwks_server: FaultyServer, clock: MovableClock
) -> None:
    COUNTS["fault cases"] += 1
    iss = iss_of("switch")
    jwks_server.switch = "ok"
    assert call(service, tokens.sign(iss=iss))[0] == 200
    jwks_server.switch = "down"
    clock.advance(7200)  # the cache (1 h) is stale: the next token makes the service try to refetch
    before = len(jwks_server.requests("switch"))
    status, seconds = call(service, tokens.sign(iss=iss))
    assert status == 200, "a down endpoint must not lock out keys already known"
    assert len(jwks_server.requests("switch")) == before + 1
    jwks_server.switch = "hang"
    clock.advance(7200)
    status, seconds = call(service, tokens.sign(iss=iss))
    assert status == 200 and seconds <= within_timeout(service, tokens)
    jwks_server.switch = "ok"


def test_key_rotation(
    service: ServiceThread, tokens: Tokens, jwks_server: FaultyServer, clock: MovableClock, keys: KeyRing
) -> None:
    """The client moves from ec-1 to ec-2: the new key is fetched when a token names it (at most once
    every 30 s), and the retired key stops working once the new set is fetched."""
    COUNTS["fault cases"] += 1
    iss = iss_of("switch")
    jwks_server.switch = "ok"
    jwks_server.jwks = KeyRing.jwks(keys.ec1)
    clock.advance(7200)
    assert call(service, tokens.sign(keys.ec1, iss=iss))[0] == 200  # refreshed: ec-1 only
    jwks_server.jwks = KeyRing.jwks(keys.ec2)  # rotated
    assert call(service, tokens.sign(keys.ec2, iss=iss))[0] == 401  # fetched < 30 s ago: not refetched yet
    assert call(service, tokens.sign(keys.ec1, iss=iss))[0] == 200  # still cached
    clock.advance(31)
    assert call(service, tokens.sign(keys.ec2, iss=iss))[0] == 200  # unknown kid: refetched
    assert call(service, tokens.sign(keys.ec1, iss=iss))[0] == 401  # retired with the new set
    jwks_server.jwks = KeyRing.jwks(keys.ec1, keys.rsa1)


@pytest.mark.parametrize(
    ("name", "skew", "accepted"),
    [
        ("EHR clock 5 s ahead", 5, True),
        ("EHR clock 5 s behind", -5, True),
        ("EHR clock 29 s ahead (leeway 30 s)", 29, True),
        ("EHR clock 2 min ahead", 120, False),
    ],
)
def test_clock_skew_of_a_few_seconds_is_tolerated(
    service: ServiceThread, keys: KeyRing, clock: MovableClock, name: str, skew: float, accepted: bool
) -> None:
    COUNTS["fault cases"] += 1
    jwks_server_iss = iss_of("ok")

    class Skewed:
        def __call__(self) -> float:
            return clock() + skew

    ehr = Tokens(keys, Skewed())  # type: ignore[arg-type]
    now = int(clock() + skew)
    # a short-lived token (60 s) issued "now" by the EHR's clock; nbf as Epic sends it
    status, _ = call(service, ehr.sign(iss=jwks_server_iss, iat=now, nbf=now, exp=now + 60))
    assert (status == 200) is accepted, status
    if skew < 0:  # behind: a token the EHR sees as just expired is still accepted within the leeway
        status, _ = call(service, ehr.sign(iss=jwks_server_iss, iat=now - 60, exp=now - 1))
        assert status == 200
