"""Registry of trusted CDS clients (EHRs, the sandbox), loaded from a JSON file.

CDS Hooks 2.0 asks services to allow-list clients by ``iss`` and ``jku`` and to decide which signing
algorithms they trust. This file is that allow list (``CDS_TRUSTED_CLIENTS_FILE``). It is a JSON list with
one object per client::

    [
      {
        "iss": "https://sandbox.cds-hooks.org",               // required; exact match with the JWT iss
        "jwks": {"keys": [...]},                               // the client's JWK Set, pinned here ...
        "jwks_url": null,                                      // ... or the URL it is published at
                                                               //     (exactly one of jwks / jwks_url)
        "jku_allowed": ["https://sandbox.cds-hooks.org/.well-known/jwks.json"],
                                                               // JWT `jku` headers accepted (exact match);
                                                               // default [] = tokens carrying a jku refused
        "tenants": null,                                       // allowed `tenant` claims; null = any
        "algorithms": ["ES384", "RS384"],                      // default; allowed: ES256 ES384 ES512
                                                               //   RS256 RS384 RS512 PS384 (never HS*/none)
        "audiences": [],                                       // extra accepted `aud` values (Epic's aud
                                                               //   is typed in by the health system)
        "fhir_servers": []                                     // allowed fhirServer URL prefixes; [] = any
      }
    ]

(JSON has no comments; they are explanations here.) Key source for a token: pinned ``jwks`` if given (a
``jku`` in the token must still be allow-listed, but keys are never fetched for such a client); otherwise
the token's allow-listed ``jku`` if present, else ``jwks_url``. Unknown members are refused so that a typo
(``"tennants"``) fails at start-up instead of silently widening access.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cds_service.security.jwks import SigningKey, parse_jwk_set

logger = logging.getLogger(__name__)

Algorithm = Literal["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS384"]
#: Every algorithm a client may be allowed; asymmetric only (CDS Hooks forbids `none` and HMAC).
ALGORITHMS: frozenset[str] = frozenset(get_args(Algorithm))
#: JWK key type each algorithm verifies with.
KEY_TYPE_BY_ALGORITHM: Mapping[str, str] = {
    alg: "EC" if alg.startswith("ES") else "RSA" for alg in ALGORITHMS
}

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class TrustedClient(BaseModel):
    """One entry of the trusted clients file (format in the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str = Field(min_length=1)
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    jku_allowed: tuple[str, ...] = ()
    tenants: tuple[str, ...] | None = None
    algorithms: tuple[Algorithm, ...] = Field(("ES384", "RS384"), min_length=1)
    audiences: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()

    _inline_keys: dict[str, SigningKey] = PrivateAttr(default_factory=dict)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url_is_https(cls, url: str | None) -> str | None:
        return None if url is None else _require_https(url)

    @field_validator("jku_allowed")
    @classmethod
    def _jku_urls_are_https(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_require_https(url) for url in urls)

    @model_validator(mode="after")
    def _exactly_one_key_source(self) -> Self:
        if (self.jwks is None) == (self.jwks_url is None):
            raise ValueError("exactly one of jwks / jwks_url is required")
        if self.jwks is not None:
            keys = parse_jwk_set(self.jwks)
            if not keys:
                raise ValueError("jwks has no usable signature key (EC or RSA public key with kid, use sig)")
            self._inline_keys = keys
        return self

    @property
    def inline_keys(self) -> Mapping[str, SigningKey]:
        """The pinned keys by kid (empty when the client publishes them at ``jwks_url``)."""
        return self._inline_keys


def _require_https(url: str) -> str:
    """Key URLs must use TLS (CDS Hooks requires it); plain http only to this machine (development)."""
    parts = urlsplit(url)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS)
    ):
        raise ValueError(f"{url!r} is not an https URL")
    return url


def index_by_iss(
    clients: Iterable[TrustedClient], source: str = "trusted clients"
) -> dict[str, TrustedClient]:
    """Clients by ``iss``; ValueError if an ``iss`` appears twice (which entry would win is ambiguous)."""
    index: dict[str, TrustedClient] = {}
    for client in clients:
        if client.iss in index:
            raise ValueError(f"{source}: duplicate iss {client.iss!r}")
        index[client.iss] = client
    return index


def load_trusted_clients(path: Path) -> list[TrustedClient]:
    """Read and validate the trusted clients file; ValueError names the file and the failing entry."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"trusted clients file {path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ValueError(f"trusted clients file {path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"trusted clients file {path}: must be a non-empty JSON list of client objects")
    clients = [_parse_entry(path, number, entry) for number, entry in enumerate(raw)]
    index_by_iss(clients, source=f"trusted clients file {path}")
    logger.info("trusted clients loaded: file=%s iss=%s", path, [client.iss for client in clients])
    return clients


def _parse_entry(path: Path, number: int, entry: object) -> TrustedClient:
    iss = entry.get("iss") if isinstance(entry, dict) else None
    where = f"trusted clients file {path}: entry {number} (iss={iss!r})"
    try:
        return TrustedClient.model_validate(entry)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False, include_input=False))
        raise ValueError(f"{where}: {problems}") from exc


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" if location else str(error["msg"])
