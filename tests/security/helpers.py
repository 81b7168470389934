"""Test helpers for client authentication: constants, a frozen clock, test keys and a token factory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.security import ClientAuthenticator, MemoryReplayCache, TrustedClient

KEYS_DIR = Path(__file__).parent / "keys"

ISS = "https://ehr.example.org/fhir"
DISCOVERY_URL = "https://cds.example.org/cds-services"
SERVICE_URL = f"{DISCOVERY_URL}/hip-weakness"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
T0 = 1_750_000_000.0  # frozen "now" of every test

DROP = object()  # claim/header value meaning "leave this member out"


class FrozenClock:
    """A clock the tests move by hand; the authenticator, JWKS cache and replay cache all read it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class KeyPair:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def ec_key(kid: str) -> KeyPair:
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": kid, "use": "sig", "alg": "ES384"}
    return KeyPair(kid, "ES384", private, jwk)


def rsa_key(kid: str) -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # No "alg" member, like many real JWK Sets: the key serves RS384 (and PS384 if the client allows it).
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True) | {"kid": kid, "use": "sig"}
    return KeyPair(kid, "RS384", private, jwk)


@dataclass(frozen=True)
class KeyRing:
    ec1: KeyPair
    rsa1: KeyPair
    ec2: KeyPair  # the key a client rotates to
    impostor: KeyPair  # another EC key that claims kid "ec-1"

    @staticmethod
    def jwks(*keys: KeyPair) -> dict[str, Any]:
        return {"keys": [key.jwk for key in keys]}


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = base | overrides
    return {name: value for name, value in merged.items() if value is not DROP}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Tokens:
    """Builds CDS Hooks client JWTs at the frozen clock's time; ``DROP`` removes a claim or header."""

    keys: KeyRing
    clock: FrozenClock

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        base = {"iss": ISS, "aud": SERVICE_URL, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
        return _apply(base, overrides)

    def sign(
        self,
        key: KeyPair | None = None,
        *,
        alg: str | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        key = key or self.keys.ec1
        headers = _apply({"kid": key.kid, "typ": "JWT"}, header or {})
        headers.setdefault("typ", None)  # PyJWT adds typ=JWT to a header without one; None drops it
        return jwt.encode(self.claims(**claims), key.private, algorithm=alg or key.alg, headers=headers)

    def forge(self, header: dict[str, Any], *, hmac_secret: bytes | None = None) -> str:
        """A token PyJWT refuses to produce: unsigned, or HS256 keyed with a public key PEM."""
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(self.claims()).encode())}"
        signature = (
            b"" if hmac_secret is None else hmac.digest(hmac_secret, signing_input.encode(), hashlib.sha256)
        )
        return f"{signing_input}.{b64url(signature)}"


def bearer(token: str) -> str:
    return f"Bearer {token}"


@dataclass
class AuthFactory:
    """Builds a ClientAuthenticator on the test clock, HTTP client and a fresh replay cache."""

    http: httpx.AsyncClient
    clock: FrozenClock

    def __call__(self, *clients: TrustedClient, **options: Any) -> ClientAuthenticator:
        replay = MemoryReplayCache(clock=self.clock)
        return ClientAuthenticator(list(clients), self.http, replay, clock=self.clock, **options)
