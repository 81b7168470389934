"""Prefetch template tokens (CDS Hooks 2.0.1 §Prefetch tokens) and FHIR token-search escaping.

``render`` fills ``{{context.<primitive field>}}`` and the ``{{userPractitionerId}}``-style user tokens from
a hook's context, exactly as an EHR does; the implementer tools fill templates with it too, so both sides
agree on what a template means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
#: The longest FHIR id a ``{{context.patientId}}`` can stand for (FHIR R4 ``id``: 64 characters).
LONGEST_ID = 64


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """Substitute 2.0.1 tokens: ``{{context.<primitive field>}}`` and ``{{userPractitionerId}}``-style
    user tokens (from ``context.userId``). None when a token cannot be filled (the key is unobtainable)."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1)
        value: object = None
        if name.startswith("context."):
            value = context.get(name.removeprefix("context."))
        elif name in _USER_TOKENS:
            user = context.get("userId")
            if isinstance(user, str) and user.startswith(_USER_TOKENS[name] + "/"):
                value = user.split("/", 1)[1]
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            missing = True
            return ""
        return str(value)

    rendered = _TOKEN.sub(fill, template)
    return None if missing else rendered


def tokens_in(template: str) -> list[str]:
    """The ``{{...}}`` tokens of a template."""
    return _TOKEN.findall(template)


def longest_rendering(template: str) -> str:
    """The template as long as it can get: every token replaced by a longest FHIR id (for URL budgets)."""
    return _TOKEN.sub("x" * LONGEST_ID, template)


def escape_token(value: str) -> str:
    """A value inside a FHIR token search parameter: ``\\``, ``,``, ``|`` and ``$`` are escaped (FHIR R4
    search §Escaping), so a code can never split a list or fake a system."""
    for ch in ("\\", ",", "|", "$"):
        value = value.replace(ch, "\\" + ch)
    return value
