"""Reading a FHIR OperationOutcome: what the server said (for the 412 body, the card, the CLI) and
whether it reports an error. Bounded text, never a token (the server never has ours to echo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def diagnostics_of(body: bytes) -> str | None:
    """The server's OperationOutcome text (bounded), if an error body is one."""
    try:
        data = orjson.loads(body[:200_000])
    except orjson.JSONDecodeError:
        return None
    return outcome_text(data) if isinstance(data, dict) else None


def outcome_text(resource: Mapping[str, Any]) -> str | None:
    if resource.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    for issue in _list(resource.get("issue")):
        if isinstance(issue, dict):
            details = issue.get("details")
            text = (
                issue.get("diagnostics")
                or (details.get("text") if isinstance(details, dict) else None)
                or issue.get("code")
            )
            if text:
                texts.append(str(text)[:300])
    return "; ".join(texts) or None


def outcome_is_error(resource: Mapping[str, Any]) -> bool:
    return any(
        isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in _list(resource.get("issue"))
    )


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
