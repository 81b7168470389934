"""JWK Sets fetched over HTTP (respx): caching, key rotation, outages and slow endpoints."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import respx

from cds_service.security import AuthenticationFailed, ClientAuthenticator, TrustedClient

from .helpers import ISS, JWKS_URL, SERVICE_URL, AuthFactory, FrozenClock, KeyPair, KeyRing, Tokens, bearer

pytestmark = pytest.mark.anyio

ALTERNATE_JKU = "https://keys.ehr.example.org/jwks"
CACHE_SECONDS = 3600

OUTAGES: dict[str, Any] = {
    "connection refused": httpx.ConnectError,
    "HTTP 500": httpx.Response(500),
    "not JSON": httpx.Response(200, text="<html>maintenance</html>"),
    "no usable key": httpx.Response(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "ec-1"}]}),
}


@pytest.fixture
def client() -> TrustedClient:
    return TrustedClient(iss=ISS, jwks_url=JWKS_URL, jku_allowed=[ALTERNATE_JKU])


@pytest.fixture
def authenticator(make_authenticator: AuthFactory, client: TrustedClient) -> ClientAuthenticator:
    return make_authenticator(client, jwks_cache_seconds=CACHE_SECONDS)


@pytest.fixture
def jwks_route(router: respx.MockRouter, keys: KeyRing) -> respx.Route:
    return router.get(JWKS_URL).respond(json=KeyRing.jwks(keys.ec1, keys.rsa1))


def serve(route: respx.Route, *keys: KeyPair) -> None:
    route.side_effect = None
    route.return_value = httpx.Response(200, json=KeyRing.jwks(*keys))


async def accept(authenticator: ClientAuthenticator, token: str) -> None:
    await authenticator.authenticate(bearer(token), SERVICE_URL)


async def reject(authenticator: ClientAuthenticator, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as failure:
        await accept(authenticator, token)
    return failure.value.reason


async def test_key_set_is_fetched_once_and_cached(
    authenticator: ClientAuthenticator, jwks_route: respx.Route, tokens: Tokens, keys: KeyRing
) -> None:
    for key in (keys.ec1, keys.rsa1, keys.ec1):
        await accept(authenticator, tokens.sign(key))
    assert jwks_route.call_count == 1
    assert jwks_route.calls.last.request.headers["accept"] == "application/json"


async def test_key_set_is_refetched_when_the_cache_expires(
    authenticator: ClientAuthenticator, jwks_route: respx.Route, tokens: Tokens, clock: FrozenClock
) -> None:
    await accept(authenticator, tokens.sign())
    clock.advance(CACHE_SECONDS)
    await accept(authenticator, tokens.sign())
    assert jwks_route.call_count == 2


async def test_concurrent_requests_share_one_fetch(
    authenticator: ClientAuthenticator, router: respx.MockRouter, tokens: Tokens, keys: KeyRing
) -> None:
    async def slow_jwks(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=KeyRing.jwks(keys.ec1))

    route = router.get(JWKS_URL).mock(side_effect=slow_jwks)
    await asyncio.gather(*(accept(authenticator, tokens.sign()) for _ in range(5)))
    assert route.call_count == 1


async def test_rotated_key_is_accepted_after_refetch(
    authenticator: ClientAuthenticator,
    jwks_route: respx.Route,
    tokens: Tokens,
    keys: KeyRing,
    clock: FrozenClock,
) -> None:
    serve(jwks_route, keys.ec1)
    await accept(authenticator, tokens.sign(keys.ec1))
    serve(jwks_route, keys.ec1, keys.ec2)

    assert await reject(authenticator, tokens.sign(keys.ec2)) == "unknown-kid"  # fetched < 30 s ago
    clock.advance(31)
    await accept(authenticator, tokens.sign(keys.ec2))
    assert jwks_route.call_count == 2


async def test_unknown_kids_refetch_at_most_once_per_30_seconds(
    authenticator: ClientAuthenticator, jwks_route: respx.Route, tokens: Tokens, clock: FrozenClock
) -> None:
    await accept(authenticator, tokens.sign())
    clock.advance(31)
    for _ in range(10):
        assert await reject(authenticator, tokens.sign(header={"kid": str(uuid.uuid4())})) == "unknown-kid"
        clock.advance(2)
    assert jwks_route.call_count == 2


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
async def test_outage_with_a_warm_cache_keeps_the_cached_keys(
    outage: Any,
    authenticator: ClientAuthenticator,
    jwks_route: respx.Route,
    tokens: Tokens,
    clock: FrozenClock,
) -> None:
    await accept(authenticator, tokens.sign())
    jwks_route.side_effect = outage
    clock.advance(CACHE_SECONDS + 1)

    await accept(authenticator, tokens.sign())
    assert jwks_route.call_count == 2


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
async def test_outage_with_a_cold_cache_is_jwks_unavailable(
    outage: Any,
    authenticator: ClientAuthenticator,
    router: respx.MockRouter,
    tokens: Tokens,
    clock: FrozenClock,
) -> None:
    route = router.get(JWKS_URL).mock(side_effect=outage)
    assert await reject(authenticator, tokens.sign()) == "jwks-unavailable"
    assert await reject(authenticator, tokens.sign()) == "jwks-unavailable"
    assert route.call_count == 1  # failures are retried at the refetch pace, not per request


async def test_key_set_recovers_after_a_cold_outage(
    authenticator: ClientAuthenticator,
    router: respx.MockRouter,
    tokens: Tokens,
    keys: KeyRing,
    clock: FrozenClock,
) -> None:
    route = router.get(JWKS_URL).mock(side_effect=httpx.ConnectError)
    assert await reject(authenticator, tokens.sign()) == "jwks-unavailable"
    serve(route, keys.ec1)
    clock.advance(30)
    await accept(authenticator, tokens.sign())


async def test_read_timeout_is_jwks_unavailable(
    authenticator: ClientAuthenticator, router: respx.MockRouter, tokens: Tokens
) -> None:
    router.get(JWKS_URL).mock(side_effect=httpx.ReadTimeout)
    assert await reject(authenticator, tokens.sign()) == "jwks-unavailable"


async def test_slow_key_set_is_abandoned_after_the_timeout(
    make_authenticator: AuthFactory, client: TrustedClient, router: respx.MockRouter, tokens: Tokens
) -> None:
    """The fetch is cancelled by the timeout (an event, not a stopwatch): the key set never arrives."""
    cancelled = asyncio.Event()

    async def never_answers(request: httpx.Request) -> httpx.Response:
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    router.get(JWKS_URL).mock(side_effect=never_answers)
    authenticator = make_authenticator(client, jwks_timeout_seconds=0.1)
    assert await asyncio.wait_for(reject(authenticator, tokens.sign()), 300) == "jwks-unavailable"
    assert cancelled.is_set()


async def test_allowed_jku_is_where_keys_are_fetched(
    authenticator: ClientAuthenticator,
    router: respx.MockRouter,
    jwks_route: respx.Route,
    tokens: Tokens,
    keys: KeyRing,
) -> None:
    jku_route = router.get(ALTERNATE_JKU).respond(json=KeyRing.jwks(keys.ec2))
    await accept(authenticator, tokens.sign(keys.ec2, header={"jku": ALTERNATE_JKU}))
    assert (jku_route.call_count, jwks_route.call_count) == (1, 0)


async def test_keys_not_for_signatures_are_ignored(
    authenticator: ClientAuthenticator, router: respx.MockRouter, tokens: Tokens, keys: KeyRing
) -> None:
    router.get(JWKS_URL).respond(json={"keys": [keys.ec1.jwk | {"use": "enc"}, keys.rsa1.jwk]})
    assert await reject(authenticator, tokens.sign(keys.ec1)) == "unknown-kid"
    await accept(authenticator, tokens.sign(keys.rsa1))


async def test_pinned_keys_are_never_fetched(
    make_authenticator: AuthFactory, router: respx.MockRouter, tokens: Tokens, keys: KeyRing
) -> None:
    client = TrustedClient(iss=ISS, jwks=KeyRing.jwks(keys.ec1), jku_allowed=[ALTERNATE_JKU])
    await accept(make_authenticator(client), tokens.sign(header={"jku": ALTERNATE_JKU}))
    assert router.calls.call_count == 0
