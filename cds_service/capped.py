"""Reading a body of bounded size, whoever sends it (an EHR's request, a FHIR server's response)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable


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
