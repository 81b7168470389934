"""Property tests: whatever a caller sends, the authenticator either accepts or raises AuthenticationFailed.

Any other exception would turn into a 500 in the HTTP layer (and could leak detail), so claim values of
every JSON type, NaN/Infinity included, are thrown at the checks that run after the signature verified.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jwt
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cds_service.security import AuthenticationFailed, ClientAuthenticator, MemoryReplayCache, TrustedClient

from .helpers import ISS, SERVICE_URL, T0, FrozenClock, KeyRing

NOW = int(T0)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` four times in five, otherwise any JSON value: most examples get past the early checks."""
    return st.integers(0, 4).flatmap(lambda n: valid if n else json_values)


claims = st.fixed_dictionaries(
    {
        "iss": mostly(st.just(ISS)),
        "aud": mostly(st.sampled_from([SERVICE_URL, [SERVICE_URL, "x"]])),
        "exp": mostly(st.integers(NOW - 100, NOW + 4000)),
        "iat": mostly(st.integers(NOW - 100, NOW + 100)),
        "jti": mostly(st.uuids().map(str)),
    },
    optional={"nbf": mostly(st.integers(NOW - 400, NOW + 100)), "tenant": json_values, "sub": json_values},
)
headers = st.fixed_dictionaries(
    {"kid": st.sampled_from(["ec-1", "ec-1", "rsa-1", "other"])},
    optional={"typ": mostly(st.sampled_from(["JWT", "jwt"])), "jku": json_values, "x5u": json_values},
)


def outcome(keys: KeyRing, authorization: str | None) -> str:
    """ "accepted" or the rejection reason; any other exception fails the test."""

    async def run() -> str:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(404))
        ) as http:
            client = TrustedClient(iss=ISS, jwks=KeyRing.jwks(keys.ec1, keys.rsa1))
            clock = FrozenClock()
            authenticator = ClientAuthenticator([client], http, MemoryReplayCache(clock=clock), clock=clock)
            try:
                await authenticator.authenticate(authorization, SERVICE_URL)
            except AuthenticationFailed as failure:
                return failure.reason
            return "accepted"

    return asyncio.run(run())


@settings(max_examples=300, deadline=None, database=None)
@given(payload=claims, header=headers)
def test_signed_tokens_with_any_claims_and_headers(
    keys: KeyRing, payload: dict[str, Any], header: dict[str, Any]
) -> None:
    token = jwt.api_jws.encode(
        json.dumps(payload).encode(), keys.ec1.private, algorithm="ES384", headers=header
    )
    result = outcome(keys, f"Bearer {token}")
    event(result)
    if result == "accepted":
        assert payload["iss"] == ISS and header["kid"] == "ec-1"


@settings(max_examples=300, deadline=None, database=None)
@given(authorization=st.none() | st.text(max_size=200) | st.text(max_size=200).map("Bearer {}".format))
def test_arbitrary_authorization_headers(keys: KeyRing, authorization: str | None) -> None:
    assert outcome(keys, authorization) != "accepted"
