"""Reading a body of bounded size, whoever sends it (an EHR's request, a FHIR server's response)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable

#: Content-Encoding -> zlib window bits (gzip header, zlib header; ``identity`` is not decoded).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPTED_ENCODINGS = "gzip, deflate"


async def read_capped(
    chunks: AsyncIterable[bytes],
    declared_length: str | None,
    limit: int,
    too_large: Callable[[str], Exception],
) -> bytes:
    """The whole body, or ``too_large(message)`` raised as soon as it is known to exceed ``limit`` bytes:
    at once from a Content-Length, else while streaming (a missing or false length is not trusted)."""
    message = f"larger than {limit} bytes"
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise too_large(message)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(message)
        parts.append(chunk)
    return b"".join(parts)


class UnsupportedEncoding(ValueError):
    """A Content-Encoding this reader does not decode."""


async def decoded(raw: AsyncIterable[bytes], encoding: str | None, limit: int) -> AsyncIterator[bytes]:
    """The body's bytes, decompressed by at most ``limit + 1`` bytes more than were read so far: a small
    compressed chunk can never inflate into a huge allocation (a gzip bomb is stopped at the limit, not
    after its 60 MB are in memory). ``encoding``: the Content-Encoding header."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        async for chunk in raw:
            yield chunk
        return
    if name not in _WBITS:
        raise UnsupportedEncoding(f"Content-Encoding {name[:20]!r} is not supported")
    inflater = zlib.decompressobj(_WBITS[name])
    produced = 0
    async for chunk in raw:
        data = chunk
        while data:
            piece = inflater.decompress(data, limit + 1 - produced)
            produced += len(piece)
            yield piece
            if produced > limit:
                return
            data = inflater.unconsumed_tail
    tail = inflater.flush()
    if tail:
        yield tail
