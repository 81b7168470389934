"""Why a bearer token was refused, in words an integrator can act on.

A 401 that gives no reason leaves an EHR team guessing: the sandbox showed "All clear!" for a cauda
equina patient because every call was refused for an ``aud`` mismatch that only the server log named. The
401 now says what failed (RFC 6750 ``WWW-Authenticate: Bearer error="invalid_token",
error_description="..."``). The description is fixed text per reason, plus at most the URL this endpoint
expects as ``aud`` (the service's own configuration): never the token or any of its values.
"""

from __future__ import annotations

import re

DESCRIPTIONS = {
    "missing": "no bearer token was sent",
    "malformed": "the bearer token is not a well-formed signed JWT",
    "alg-not-allowed": "the JWT signature algorithm is not allowed (ES384 or RS384)",
    "typ": "the JWT header typ must be JWT",
    "missing-kid": "the JWT header has no kid",
    "unknown-iss": "unknown issuer: the JWT iss is not a trusted client of this service",
    "jku-not-allowed": "the JWT jku is not a key set URL allowed for this issuer",
    "jwks-unavailable": "the issuer's public key set could not be fetched",
    "unknown-kid": "the issuer's key set has no key with the JWT kid",
    "bad-key": "the issuer's key cannot verify this JWT",
    "bad-signature": "the JWT signature does not verify",
    "missing-claim": "a required JWT claim is missing (iss, aud, exp, iat, jti)",
    "bad-aud": "audience mismatch: the JWT aud must be the exact URL called",
    "expired": "the JWT has expired (exp)",
    "iat-future": "the JWT was issued in the future (iat): check the clocks",
    "nbf-future": "the JWT is not valid yet (nbf)",
    "lifetime-too-long": "the JWT lifetime (exp - iat) is longer than this service accepts",
    "tenant-not-allowed": "the JWT tenant is not allowed for this issuer",
    "replay": "the JWT was already used (jti replay)",
}
_NOT_QUOTABLE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")  # RFC 6750 error_description characters


class AuthenticationFailed(Exception):
    """Raised for any bad/missing token. ``reason`` is a short machine-readable string for logs and
    metrics (a key of ``DESCRIPTIONS``); ``expected_aud`` is set for ``bad-aud``."""

    def __init__(self, reason: str, *, expected_aud: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected_aud = expected_aud

    @property
    def description(self) -> str:
        text = DESCRIPTIONS.get(self.reason, "the bearer token was refused")
        if self.expected_aud:
            text += f" (this endpoint expects {self.expected_aud})"
        return text


def www_authenticate(description: str | None) -> str:
    """The ``WWW-Authenticate`` value: plain ``Bearer`` when no token was sent (RFC 6750 3.1: no error
    code then), else ``invalid_token`` with the description."""
    if description is None:
        return "Bearer"
    return f'Bearer error="invalid_token", error_description="{_NOT_QUOTABLE.sub("", description)[:300]}"'
