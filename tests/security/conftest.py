"""Fixtures for the client-authentication tests.

No test touches the network: HTTP goes through a respx router that refuses unmocked URLs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from cds_service.security import TrustedClient

from .helpers import ISS, AuthFactory, FrozenClock, KeyRing, Tokens


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def tokens(keys: KeyRing, clock: FrozenClock) -> Tokens:
    return Tokens(keys, clock)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock_router:
        yield mock_router


@pytest.fixture
async def http(router: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def make_authenticator(http: httpx.AsyncClient, clock: FrozenClock) -> AuthFactory:
    return AuthFactory(http, clock)


@pytest.fixture
def inline_client(keys: KeyRing) -> TrustedClient:
    """A client whose keys are pinned in the trusted clients file (no HTTP)."""
    return TrustedClient(iss=ISS, jwks=KeyRing.jwks(keys.ec1, keys.rsa1))
