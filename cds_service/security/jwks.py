"""JWK Sets of trusted CDS clients: parsing and an async, per-URL cache.

Why a cache of our own: PyJWT's ``PyJWKClient`` fetches with synchronous urllib, which would block the
event loop. Here the JWK Set is fetched with the service's shared ``httpx.AsyncClient`` and kept per URL:

* fresh for ``cache_seconds``; after that the next request refetches it;
* an unknown ``kid`` triggers a refetch (the client rotated its keys), but at most once per
  ``min_refetch_seconds`` per URL, so a stream of tokens with made-up kids cannot hammer the client's
  endpoint (and failures are retried at that pace too);
* a failed fetch keeps the keys already cached: a client's JWKS endpoint being down must not lock out
  tokens signed with keys we already know;
* concurrent requests for the same URL share one fetch (one ``asyncio.Lock`` per URL).

Only URLs from the trusted-clients file reach this cache (``jwks_url`` or an allow-listed ``jku``), so the
number of entries and locks is bounded by configuration, and tokens cannot make us fetch arbitrary URLs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

logger = logging.getLogger(__name__)

#: Key types we verify with; symmetric (``oct``) and other keys are never used.
SIGNING_KEY_TYPES = frozenset({"EC", "RSA"})
#: A JWK Set is a few kilobytes; anything much larger is a misconfigured or hostile endpoint.
MAX_JWKS_BYTES = 256 * 1024


class JwksUnavailable(Exception):
    """No keys at all are known for a JWK Set URL (never fetched successfully)."""


@dataclass(frozen=True)
class SigningKey:
    """One public verification key from a JWK Set.

    ``alg`` is the algorithm the JWK declares (``None`` if it declares none): a key that names its
    algorithm must not be used with another one.
    """

    kid: str
    kty: str
    alg: str | None
    jwk: jwt.PyJWK


def parse_jwk_set(data: object) -> dict[str, SigningKey]:
    """Return the usable signature keys of a JWK Set, by ``kid``.

    Raises ValueError if ``data`` is not a JWK Set at all. Keys that cannot verify a CDS Hooks JWT are
    skipped (logged at debug): ``use`` other than ``sig``, no ``kid``, not EC/RSA, private key material,
    or a key PyJWT cannot load. The first key wins when a ``kid`` repeats.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ValueError('a JWK Set must be an object with a "keys" list')
    keys: dict[str, SigningKey] = {}
    for member in data["keys"]:
        key = _signing_key(member)
        if key is None:
            continue
        if key.kid in keys:
            logger.warning("JWK Set repeats kid=%r; the first key is used", key.kid)
            continue
        keys[key.kid] = key
    return keys


def _signing_key(member: object) -> SigningKey | None:
    if not isinstance(member, dict):
        return None
    kid, kty, use, alg = (member.get(name) for name in ("kid", "kty", "use", "alg"))
    if use not in (None, "sig") or not isinstance(kid, str) or not kid or kty not in SIGNING_KEY_TYPES:
        logger.debug("JWK skipped: kid=%r kty=%r use=%r", kid, kty, use)
        return None
    if "d" in member:
        logger.warning("JWK kid=%r contains private key material; skipped", kid)
        return None
    try:
        jwk = jwt.PyJWK(member)
    except jwt.PyJWTError as exc:
        logger.debug("JWK kid=%r skipped: %s", kid, exc)
        return None
    return SigningKey(kid=kid, kty=str(kty), alg=alg if isinstance(alg, str) else None, jwk=jwk)


@dataclass
class _Entry:
    keys: dict[str, SigningKey] = field(default_factory=dict)
    fetched_at: float | None = None  # last successful fetch
    attempted_at: float = -math.inf  # last fetch, successful or not


class JwksCache:
    """JWK Sets fetched over HTTP, cached per URL (see the module docstring for the policy)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        cache_seconds: float = 3600,
        timeout_seconds: float = 2.0,
        min_refetch_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get_key(self, url: str, kid: str) -> SigningKey | None:
        """The key ``kid`` of the JWK Set at ``url``, or None if the set has no such key.

        Raises JwksUnavailable if no keys at all are known for ``url``.
        """
        lock = self._locks[url]
        if lock.locked() or self._should_fetch(url, kid):
            async with lock:  # wait for the fetch in progress, or make one
                if self._should_fetch(url, kid):
                    await self._refresh(url)
        entry = self._entries.get(url)
        if entry is None or not entry.keys:
            raise JwksUnavailable(url)
        return entry.keys.get(kid)

    def _should_fetch(self, url: str, kid: str) -> bool:
        entry = self._entries.get(url)
        if entry is None:
            return True
        now = self._clock()
        if now - entry.attempted_at < self._min_refetch_seconds:
            return False
        stale = entry.fetched_at is None or now - entry.fetched_at >= self._cache_seconds
        return stale or kid not in entry.keys

    async def _refresh(self, url: str) -> None:
        entry = self._entries.setdefault(url, _Entry())
        entry.attempted_at = self._clock()
        try:
            keys = await self._download(url)
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            logger.warning(
                "JWK Set fetch failed: url=%s error=%s: %s; keeping %d cached key(s)",
                url,
                type(exc).__name__,
                exc,
                len(entry.keys),
            )
            return
        entry.keys, entry.fetched_at = keys, self._clock()
        logger.info("JWK Set fetched: url=%s kids=%s", url, sorted(keys))

    async def _download(self, url: str) -> dict[str, SigningKey]:
        # httpx's timeout applies per phase (connect, read...); asyncio.timeout bounds the whole fetch.
        async with asyncio.timeout(self._timeout_seconds):
            response = await self._http.get(
                url, timeout=self._timeout_seconds, headers={"Accept": "application/json"}
            )
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError(f"JWK Set larger than {MAX_JWKS_BYTES} bytes")
        body: Any = response.json()
        keys = parse_jwk_set(body)
        if not keys:
            raise ValueError("JWK Set has no usable signature key")
        return keys
