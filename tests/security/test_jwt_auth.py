"""ClientAuthenticator: every way a client JWT can be wrong is refused with its reason; good tokens pass."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest

from cds_service.security import AuthenticationFailed, ClientAuthenticator, ClientIdentity, TrustedClient

from .helpers import (
    DISCOVERY_URL,
    DROP,
    ISS,
    KEYS_DIR,
    SERVICE_URL,
    T0,
    AuthFactory,
    FrozenClock,
    KeyRing,
    Tokens,
    b64url,
    bearer,
)

pytestmark = pytest.mark.anyio

TENANT_ISS = "https://tenant-ehr.example.org"
EPIC_ISS = "https://epic.example.org/api/FHIR/R4"
EPIC_JKU = "https://epic.example.org/api/epic/2019/Security/Open/PublicKeys/530013/530013"
EPIC_TYPED_AUD = "https://cds.example.org/epic-endpoint"
NOW = int(T0)


@pytest.fixture
def authenticator(
    make_authenticator: AuthFactory, keys: KeyRing, inline_client: TrustedClient
) -> ClientAuthenticator:
    jwks = KeyRing.jwks(keys.ec1, keys.rsa1)
    return make_authenticator(
        inline_client,
        TrustedClient(iss=TENANT_ISS, jwks=jwks, tenants=["t1"], fhir_servers=["https://fhir.example.org/"]),
        TrustedClient(
            iss=EPIC_ISS, jwks=jwks, algorithms=["RS384"], jku_allowed=[EPIC_JKU], audiences=[EPIC_TYPED_AUD]
        ),
    )


async def reason_for(
    authenticator: ClientAuthenticator, header: str | None, audience: str = SERVICE_URL
) -> str:
    with pytest.raises(AuthenticationFailed) as failure:
        await authenticator.authenticate(header, audience)
    return failure.value.reason


# --- rejections ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad request: how to build its Authorization header, the reason expected, the endpoint called."""

    build: Callable[[Tokens, KeyRing], str | None]
    reason: str
    audience: str = SERVICE_URL


def _tampered(t: Tokens, k: KeyRing) -> str:
    header, _, signature = t.sign().split(".")
    other_claims = b64url(json.dumps(t.claims(iss=ISS, jti="forged")).encode())
    return bearer(f"{header}.{other_claims}.{signature}")


BAD_REQUESTS = {
    "no header": Bad(lambda t, k: None, "missing"),
    "empty header": Bad(lambda t, k: "  ", "missing"),
    "basic auth": Bad(lambda t, k: "Basic dXNlcjpwYXNz", "malformed"),
    "bearer without token": Bad(lambda t, k: "Bearer", "malformed"),
    "garbage": Bad(lambda t, k: "Bearer not-a-jwt", "malformed"),
    "garbage three parts": Bad(lambda t, k: "Bearer a.b.c", "malformed"),
    "oversized": Bad(lambda t, k: bearer("a" * 20_000), "malformed"),
    "alg none": Bad(
        lambda t, k: bearer(t.forge({"alg": "none", "typ": "JWT", "kid": "ec-1"})), "alg-not-allowed"
    ),
    "HS256 keyed with the public key": Bad(
        lambda t, k: bearer(
            t.forge({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}, hmac_secret=k.ec1.public_pem)
        ),
        "alg-not-allowed",
    ),
    "alg not allowed for the client": Bad(
        lambda t, k: bearer(t.sign(k.rsa1, alg="PS384")), "alg-not-allowed"
    ),
    "alg other than the JWK's": Bad(
        lambda t, k: bearer(t.sign(k.rsa1, header={"kid": "ec-1"})), "alg-not-allowed"
    ),
    "EC alg on an RSA key": Bad(lambda t, k: bearer(t.sign(k.ec1, header={"kid": "rsa-1"})), "bad-key"),
    "typ not JWT": Bad(lambda t, k: bearer(t.sign(header={"typ": "at+jwt"})), "typ"),
    "no typ (REQUIRED in 2.0.1)": Bad(lambda t, k: bearer(t.sign(header={"typ": DROP})), "typ"),
    "no kid": Bad(lambda t, k: bearer(t.sign(header={"kid": DROP})), "missing-kid"),
    "unknown kid": Bad(lambda t, k: bearer(t.sign(header={"kid": "nope"})), "unknown-kid"),
    "unknown iss": Bad(lambda t, k: bearer(t.sign(iss="https://rogue.example.org")), "unknown-iss"),
    "no iss": Bad(lambda t, k: bearer(t.sign(iss=DROP)), "missing-claim"),
    "no aud": Bad(lambda t, k: bearer(t.sign(aud=DROP)), "missing-claim"),
    "no exp": Bad(lambda t, k: bearer(t.sign(exp=DROP)), "missing-claim"),
    "no iat": Bad(lambda t, k: bearer(t.sign(iat=DROP)), "missing-claim"),
    "no jti": Bad(lambda t, k: bearer(t.sign(jti=DROP)), "missing-claim"),
    "discovery token on a service": Bad(lambda t, k: bearer(t.sign(aud=DISCOVERY_URL)), "bad-aud"),
    "service token on discovery": Bad(lambda t, k: bearer(t.sign(aud=SERVICE_URL)), "bad-aud", DISCOVERY_URL),
    "aud list without us": Bad(lambda t, k: bearer(t.sign(aud=[DISCOVERY_URL, "https://x.org"])), "bad-aud"),
    "aud with a suffix": Bad(lambda t, k: bearer(t.sign(aud=SERVICE_URL + "-other")), "bad-aud"),
    "expired beyond leeway": Bad(lambda t, k: bearer(t.sign(iat=NOW - 300, exp=NOW - 31)), "expired"),
    "iat in the future": Bad(lambda t, k: bearer(t.sign(iat=NOW + 60, exp=NOW + 360)), "iat-future"),
    "nbf in the future": Bad(lambda t, k: bearer(t.sign(nbf=NOW + 60)), "nbf-future"),
    "lifetime too long": Bad(lambda t, k: bearer(t.sign(exp=NOW + 3601)), "lifetime-too-long"),
    "signed by another key with the same kid": Bad(lambda t, k: bearer(t.sign(k.impostor)), "bad-signature"),
    "payload swapped": Bad(_tampered, "bad-signature"),
    "jku not allowed": Bad(
        lambda t, k: bearer(t.sign(header={"jku": "https://rogue.example/jwks"})), "jku-not-allowed"
    ),
    "tenant not allowed": Bad(lambda t, k: bearer(t.sign(iss=TENANT_ISS, tenant="t2")), "tenant-not-allowed"),
    "tenant missing": Bad(lambda t, k: bearer(t.sign(iss=TENANT_ISS)), "tenant-not-allowed"),
    "exp not a number": Bad(lambda t, k: bearer(t.sign(exp="tomorrow")), "malformed"),
    "exp NaN": Bad(lambda t, k: bearer(t.sign(exp=float("nan"))), "malformed"),
    "exp boolean": Bad(lambda t, k: bearer(t.sign(exp=True)), "malformed"),
    "jti not a string": Bad(lambda t, k: bearer(t.sign(jti=42)), "malformed"),
    "aud list of numbers": Bad(lambda t, k: bearer(t.sign(aud=[1, 2])), "malformed"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_token_is_rejected_with_its_reason(
    case: Bad, authenticator: ClientAuthenticator, tokens: Tokens, keys: KeyRing
) -> None:
    assert await reason_for(authenticator, case.build(tokens, keys), case.audience) == case.reason


async def test_replayed_jti_is_rejected(authenticator: ClientAuthenticator, tokens: Tokens) -> None:
    header = bearer(tokens.sign())
    await authenticator.authenticate(header, SERVICE_URL)
    assert await reason_for(authenticator, header) == "replay"


async def test_jti_is_only_consumed_by_a_token_that_verified(
    authenticator: ClientAuthenticator, tokens: Tokens, keys: KeyRing
) -> None:
    assert await reason_for(authenticator, bearer(tokens.sign(keys.impostor, jti="j-1"))) == "bad-signature"
    await authenticator.authenticate(bearer(tokens.sign(jti="j-1")), SERVICE_URL)


# --- acceptances ------------------------------------------------------------------------------------------

GOOD_REQUESTS: dict[str, Callable[[Tokens, KeyRing], str]] = {
    "ES384": lambda t, k: bearer(t.sign(k.ec1)),
    "RS384": lambda t, k: bearer(t.sign(k.rsa1)),
    "aud as an array": lambda t, k: bearer(t.sign(aud=[DISCOVERY_URL, SERVICE_URL])),
    "aud with a trailing slash": lambda t, k: bearer(t.sign(aud=SERVICE_URL + "/")),
    "iat 5 s ahead (clock skew)": lambda t, k: bearer(t.sign(iat=NOW + 5, exp=NOW + 305)),
    "expired 29 s ago (leeway)": lambda t, k: bearer(t.sign(iat=NOW - 300, exp=NOW - 29)),
    "typ in lower case": lambda t, k: bearer(t.sign(header={"typ": "jwt"})),
    "typ as a media type": lambda t, k: bearer(t.sign(header={"typ": "application/jwt"})),
    "scheme in lower case": lambda t, k: f"bearer {t.sign()}",
    "extra claims": lambda t, k: bearer(t.sign(fhirUser="Practitioner/1", tenant="any")),
    "allowed tenant": lambda t, k: bearer(t.sign(iss=TENANT_ISS, tenant="t1")),
    "Epic style": lambda t, k: bearer(
        t.sign(
            k.rsa1,
            header={"jku": EPIC_JKU},
            iss=EPIC_ISS,
            aud=EPIC_TYPED_AUD,
            sub="epic-client-id",
            nbf=NOW - 300,
            exp=NOW + 900,
        )
    ),
}


@pytest.mark.parametrize("build", GOOD_REQUESTS.values(), ids=GOOD_REQUESTS.keys())
async def test_good_token_is_accepted(
    build: Callable[[Tokens, KeyRing], str], authenticator: ClientAuthenticator, tokens: Tokens, keys: KeyRing
) -> None:
    identity = await authenticator.authenticate(build(tokens, keys), SERVICE_URL)
    assert isinstance(identity, ClientIdentity)


async def test_identity_reports_the_verified_client(
    authenticator: ClientAuthenticator, tokens: Tokens
) -> None:
    token = tokens.sign(iss=TENANT_ISS, tenant="t1", sub="client-7", jti="jti-1")
    identity = await authenticator.authenticate(bearer(token), SERVICE_URL)
    assert identity == ClientIdentity(
        iss=TENANT_ISS,
        tenant="t1",
        jti="jti-1",
        kid="ec-1",
        sub="client-7",
        fhir_servers=("https://fhir.example.org/",),
    )


async def test_expected_audience_may_end_with_a_slash(
    authenticator: ClientAuthenticator, tokens: Tokens
) -> None:
    await authenticator.authenticate(bearer(tokens.sign()), SERVICE_URL + "/")


async def test_tokens_are_checked_against_the_injected_clock(
    authenticator: ClientAuthenticator, tokens: Tokens, clock: FrozenClock
) -> None:
    header = bearer(tokens.sign(exp=NOW + 60))
    clock.advance(91)
    assert await reason_for(authenticator, header) == "expired"


async def test_duplicate_iss_is_refused(
    make_authenticator: AuthFactory, inline_client: TrustedClient
) -> None:
    with pytest.raises(ValueError, match="duplicate iss"):
        make_authenticator(inline_client, inline_client)


# --- the CDS Hooks 2.0.1 specification's own example --------------------------------------------------------


async def test_spec_example_token_verifies_against_the_spec_key_set(make_authenticator: AuthFactory) -> None:
    token = (KEYS_DIR / "v201-example-authorization-jwt.txt").read_text().strip()
    header, claims = jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    clock = FrozenClock(claims["iat"] + 1)
    client = TrustedClient(
        iss=claims["iss"],
        jwks=json.loads((KEYS_DIR / "v201-27-example.json").read_text()),
        jku_allowed=[header["jku"]] if "jku" in header else [],
    )
    # The example token lives 3.5 years (exp 2015, iat 2011): the lifetime bound is lifted for it.
    authenticator = AuthFactory(make_authenticator.http, clock)(client, max_lifetime_seconds=10**9)

    identity = await authenticator.authenticate(bearer(token), claims["aud"])

    assert (identity.iss, identity.kid, identity.tenant) == (claims["iss"], "example-kid", claims["tenant"])


# --- logs ---------------------------------------------------------------------------------------------------


async def test_tokens_never_reach_the_logs(
    authenticator: ClientAuthenticator, tokens: Tokens, keys: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cds_service.security")
    failing = ("alg none", "unknown kid", "expired beyond leeway", "signed by another key with the same kid")
    headers = [
        bearer(tokens.sign(jti="logged-jti")),
        *(str(BAD_REQUESTS[name].build(tokens, keys)) for name in failing),
    ]

    for header in headers:
        with contextlib.suppress(AuthenticationFailed):
            await authenticator.authenticate(header, SERVICE_URL)

    for header in headers:
        token = header.removeprefix("Bearer ")
        assert token not in caplog.text
        assert all(part not in caplog.text for part in token.split(".")[1:] if part)
    assert "reason=bad-signature" in caplog.text
    assert "accepted" in caplog.text
    assert "'logged-jti'" in caplog.text
