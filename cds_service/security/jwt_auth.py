"""Authentication of CDS clients: the ``Authorization: Bearer <JWT>`` of CDS Hooks 2.0.

Order of checks (each failure raises ``AuthenticationFailed`` with a short ``reason``; the HTTP layer
answers 401 saying which check failed, in fixed words, never with the token: ``security.failures``):

1. header present and ``Bearer`` (``missing``/``malformed``); token decodes (``malformed``);
2. ``alg`` asymmetric and trusted at all (``alg-not-allowed``: ``none`` and HS* never are), ``typ`` JWT
   (``typ``), ``kid`` present (``missing-kid``);
3. unverified ``iss`` names a trusted client (``unknown-iss``), which allows this ``alg``;
4. the key: a ``jku`` must be allow-listed for the client (``jku-not-allowed``); key found by ``kid``
   (``unknown-kid``, ``jwks-unavailable``) and fit for ``alg`` (``alg-not-allowed``, ``bad-key``);
5. signature, with PyJWT told the one algorithm and given the key *object* (never a PEM string a
   HS256 token could use as an HMAC secret) (``bad-signature``);
6. claims, checked here against the injected clock rather than by PyJWT (which reads ``time.time``):
   required claims, ``aud``, ``exp``/``iat``/``nbf`` with leeway, lifetime, ``tenant``;
7. ``jti`` not seen before (``replay``).

Unverified header and claims are only used to choose the client and key. Tokens are never logged: a
rejection is logged with its reason and the (truncated, repr-escaped) ``iss``, ``kid`` and ``jti``; an
``aud`` mismatch also logs the audience configured and the one received.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.types import Options

from cds_service.security.clients import ALGORITHMS, KEY_TYPE_BY_ALGORITHM, TrustedClient, index_by_iss
from cds_service.security.failures import AuthenticationFailed
from cds_service.security.jwks import JwksCache, JwksUnavailable, SigningKey
from cds_service.security.replay import ReplayCache

logger = logging.getLogger(__name__)

REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
#: Far above any real CDS Hooks JWT (~1 kB); bounds the work done on unauthenticated input.
MAX_TOKEN_CHARS = 16 * 1024

_BEARER = re.compile(r"\s*bearer\s+(\S+)\s*", re.IGNORECASE)
_ACCEPTED_TYP = frozenset({"JWT", "APPLICATION/JWT"})  # RFC 7515 §4.1.9: "JWT" means "application/JWT"
_SIGNATURE_ONLY: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "enforce_minimum_key_length": True,
}
_UNVERIFIED: Options = {"verify_signature": False}


@dataclass(frozen=True)
class ClientIdentity:
    """Who called, as proven by a verified JWT."""

    iss: str
    tenant: str | None
    jti: str
    kid: str
    sub: str | None
    fhir_servers: tuple[str, ...]  # allowed fhirServer URL prefixes for this client (empty tuple = any)


@dataclass(frozen=True)
class _UnverifiedToken:
    """A token split into header and claims, nothing checked yet."""

    token: str
    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    @classmethod
    def from_authorization(cls, authorization_header: str | None) -> _UnverifiedToken:
        if not authorization_header or not authorization_header.strip():
            raise AuthenticationFailed("missing")
        match = _BEARER.fullmatch(authorization_header)
        if match is None or len(match[1]) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed("malformed")
        token = match[1]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options=_UNVERIFIED)
        except jwt.PyJWTError:
            raise AuthenticationFailed("malformed") from None
        return cls(token, header, claims)

    def log_fields(self) -> tuple[str, str, str]:
        """iss, kid and jti, safe to log: attacker-controlled, so truncated and repr-escaped."""
        return (
            _loggable(self.claims.get("iss")),
            _loggable(self.header.get("kid")),
            _loggable(self.claims.get("jti")),
        )


def _loggable(value: object) -> str:
    if value is None or isinstance(value, str):
        return repr(value if value is None or len(value) <= 100 else value[:100] + "...")
    return f"<{type(value).__name__}>"


class ClientAuthenticator:
    """Verifies CDS Hooks client JWTs against the trusted clients (see the module docstring)."""

    def __init__(
        self,
        clients: Sequence[TrustedClient],
        http: httpx.AsyncClient,
        replay: ReplayCache,
        *,
        leeway_seconds: int = 30,
        max_lifetime_seconds: int = 3600,
        jwks_cache_seconds: int = 3600,
        jwks_timeout_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clients = index_by_iss(clients)
        self._replay = replay
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds
        self._clock = clock
        self._jwks = JwksCache(
            http, cache_seconds=jwks_cache_seconds, timeout_seconds=jwks_timeout_seconds, clock=clock
        )

    async def authenticate(self, authorization_header: str | None, audience: str) -> ClientIdentity:
        """Verify the request's bearer JWT for the endpoint URL ``audience``; AuthenticationFailed if not."""
        unverified: _UnverifiedToken | None = None
        try:
            unverified = _UnverifiedToken.from_authorization(authorization_header)
            identity = await self._verify(unverified, audience)
        except AuthenticationFailed as exc:
            iss, kid, jti = unverified.log_fields() if unverified is not None else ("None",) * 3
            logger.warning("client JWT rejected: reason=%s iss=%s kid=%s jti=%s", exc.reason, iss, kid, jti)
            raise
        logger.debug("client JWT accepted: iss=%r kid=%r jti=%r", identity.iss, identity.kid, identity.jti)
        return identity

    async def _verify(self, unverified: _UnverifiedToken, audience: str) -> ClientIdentity:
        alg, kid = _check_header(unverified.header)
        client = self._client_for(unverified.claims.get("iss"), alg)
        key = await self._key_for(client, unverified.header.get("jku"), kid)
        claims = _verify_signature(unverified.token, key, alg)
        _ClaimsCheck(client, audience, self._clock(), self._leeway, self._max_lifetime).run(claims)
        if await self._replay.check_and_store(client.iss, claims["jti"], claims["exp"] + self._leeway):
            raise AuthenticationFailed("replay")
        return ClientIdentity(
            iss=client.iss,
            tenant=claims.get("tenant"),
            jti=claims["jti"],
            kid=kid,
            sub=claims.get("sub"),
            fhir_servers=client.fhir_servers,
        )

    def _client_for(self, iss: object, alg: str) -> TrustedClient:
        if iss is None:
            raise AuthenticationFailed("missing-claim")
        if not isinstance(iss, str):
            raise AuthenticationFailed("malformed")
        client = self._clients.get(iss)
        if client is None:
            raise AuthenticationFailed("unknown-iss")
        if alg not in client.algorithms:
            raise AuthenticationFailed("alg-not-allowed")
        return client

    async def _key_for(self, client: TrustedClient, jku: object, kid: str) -> SigningKey:
        if jku is not None and jku not in client.jku_allowed:
            raise AuthenticationFailed("jku-not-allowed")
        if client.jwks_url is None:
            key = client.inline_keys.get(kid)  # pinned keys: an allowed jku is never fetched
        else:
            url = jku if isinstance(jku, str) else client.jwks_url
            try:
                key = await self._jwks.get_key(url, kid)
            except JwksUnavailable:
                raise AuthenticationFailed("jwks-unavailable") from None
        if key is None:
            raise AuthenticationFailed("unknown-kid")
        return key


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    """The token's ``alg`` and ``kid`` once the header passes the checks that need no client."""
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AuthenticationFailed("alg-not-allowed")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.upper() not in _ACCEPTED_TYP:  # REQUIRED in CDS Hooks 2.0.1
        raise AuthenticationFailed("typ")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationFailed("missing-kid")
    return str(alg), kid


def _verify_signature(token: str, key: SigningKey, alg: str) -> dict[str, Any]:
    """Verified claims (signature only; claims are checked by ``_ClaimsCheck``)."""
    if key.alg is not None and key.alg != alg:
        raise AuthenticationFailed("alg-not-allowed")
    if KEY_TYPE_BY_ALGORITHM[alg] != key.kty:
        raise AuthenticationFailed("bad-key")
    try:
        return jwt.decode(token, key.jwk.key, algorithms=[alg], options=_SIGNATURE_ONLY)
    except jwt.InvalidSignatureError:
        raise AuthenticationFailed("bad-signature") from None
    except jwt.InvalidKeyError:  # e.g. EC curve not matching alg, RSA key shorter than 2048 bits
        raise AuthenticationFailed("bad-key") from None
    except jwt.PyJWTError:
        raise AuthenticationFailed("malformed") from None


@dataclass(frozen=True)
class _ClaimsCheck:
    """The claim rules of CDS Hooks 2.0 (plus Epic's ``sub``/``nbf``), evaluated at ``now``."""

    client: TrustedClient
    audience: str
    now: float
    leeway: float
    max_lifetime: float

    def run(self, claims: Mapping[str, Any]) -> None:
        if any(claims.get(name) is None for name in REQUIRED_CLAIMS):
            raise AuthenticationFailed("missing-claim")
        _require_types(claims)
        if not self._audience_accepted(claims["aud"]):
            logger.warning(
                "JWT aud mismatch: configured %s, received %s "
                "(CDS_PUBLIC_BASE_URL must be the URL clients call)",
                self.audience,
                _loggable(claims["aud"] if isinstance(claims["aud"], str) else ",".join(claims["aud"])),
            )
            raise AuthenticationFailed("bad-aud", expected_aud=self.audience)
        self._check_times(claims["exp"], claims["iat"], claims.get("nbf"))
        if self.client.tenants is not None and claims.get("tenant") not in self.client.tenants:
            raise AuthenticationFailed("tenant-not-allowed")

    def _audience_accepted(self, aud: str | list[str]) -> bool:
        accepted = {_strip_slash(self.audience), *(_strip_slash(extra) for extra in self.client.audiences)}
        values = [aud] if isinstance(aud, str) else aud
        return any(_strip_slash(value) in accepted for value in values)

    def _check_times(self, exp: float, iat: float, nbf: float | None) -> None:
        if exp <= self.now - self.leeway:
            raise AuthenticationFailed("expired")
        if iat > self.now + self.leeway:
            raise AuthenticationFailed("iat-future")
        if nbf is not None and nbf > self.now + self.leeway:
            raise AuthenticationFailed("nbf-future")
        if exp - iat > self.max_lifetime:
            raise AuthenticationFailed("lifetime-too-long")


def _require_types(claims: Mapping[str, Any]) -> None:
    """Claim values of the wrong JSON type make the token malformed (checked before they are compared)."""
    aud = claims["aud"]
    well_typed = (
        isinstance(claims["jti"], str)
        and claims["jti"] != ""
        and (isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(value, str) for value in aud)))
        and _is_time(claims["exp"])
        and _is_time(claims["iat"])
        and (claims.get("nbf") is None or _is_time(claims["nbf"]))
        and all(claims.get(name) is None or isinstance(claims[name], str) for name in ("sub", "tenant"))
    )
    if not well_typed:
        raise AuthenticationFailed("malformed")


def _is_time(value: object) -> bool:
    """A NumericDate: a finite JSON number (Python's json accepts NaN and Infinity, which compare wrongly)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _strip_slash(url: str) -> str:
    return url.rstrip("/")
