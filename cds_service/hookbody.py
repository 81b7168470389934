"""Decoding a hook request body: the envelope in full, the prefetch only as far as a rule can use it.

A prefetch is mostly data no rule reads (a Synthea patient's 250 resources hold about 15 findings; a real
patient's thousands of laboratory results hold none). Turning all of it into Python dicts, walking it and
freeing it was half of a call's cost. So the body is decoded with msgspec into a few typed structures:
the envelope members, each prefetch value as raw JSON, each Bundle entry's resource as raw JSON, and of
each resource only its type, id, codes and components (a "head"). The engine's normaliser says from the
head whether it could use the resource (``Normaliser.worth_reading``); only those are decoded in full.

The fast path never changes an answer. Whenever it cannot be sure the body would have been read exactly
as a full parse reads it, the whole body, or one prefetch value, is parsed the old way (orjson into
dicts) and read by the same code as before: a body with non-ASCII bytes that are not valid UTF-8,
anything msgspec refuses (malformed JSON, a lone surrogate, a control character, a number out of range
where it decodes) or finds nested too deeply, a value of an unexpected shape. Input errors therefore stay
as they were: orjson's and pydantic's, naming the field. One difference, on purpose: a number beyond a
double's range (1e400) inside a resource no rule reads is skipped unread, as valid JSON (RFC 8259 sets no
range), where orjson refused the whole body; in anything read it is still refused (400).

Repeated member names that would drop FHIR data are refused (400, ``repeated_members``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cds_service.engine.terminology import CodingLike
from cds_service.fhir.outcomes import outcome_is_error, outcome_text
from cds_service.prefetch.supplied import InvalidPrefetch, Supplied, has_next, read_supplied
from cds_service.repeated_members import (
    contained_count,
    count_resources,
    draft_resources,
    kept_resources,
    refuse_dropped_resources,
)
from cds_service.schemas import json_object

#: Whether the normaliser could use a resource, from its ``resourceType``, its code's codings and each
#: component's (``Normaliser.worth_reading``).
WorthReading = Callable[[object, Iterable[CodingLike] | None, Iterable[Iterable[CodingLike] | None]], bool]
Prefetched = Supplied | InvalidPrefetch | None
ENVELOPE = ("hook", "hookInstance", "fhirServer", "fhirAuthorization", "context", "prefetch", "extension")
_UNSET = msgspec.UNSET


class _EntryRaw(msgspec.Struct):
    resource: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Value(msgspec.Struct):
    """A prefetch value, in the same read as the envelope: a Bundle's entries stay raw JSON; of a Patient
    what the engine reads (id, birth date); of an OperationOutcome its issues. Any other value is read
    the old way (``_NotHandled``)."""

    resourceType: Any = _UNSET
    id: Any = _UNSET
    birthDate: Any = _UNSET
    issue: Any = _UNSET
    entry: list[_EntryRaw] | msgspec.UnsetType | None = _UNSET
    link: Any = _UNSET
    contained: Any = _UNSET


class _Top(msgspec.Struct):
    hook: Any = _UNSET
    hookInstance: Any = _UNSET
    fhirServer: Any = _UNSET
    fhirAuthorization: Any = _UNSET
    context: Any = _UNSET
    prefetch: dict[str, _Value | None] | msgspec.UnsetType | None = _UNSET
    extension: Any = _UNSET


class _Coding(msgspec.Struct, frozen=True):
    system: str | msgspec.UnsetType | None = _UNSET
    code: str | msgspec.UnsetType | None = _UNSET


class _Concept(msgspec.Struct, frozen=True):
    coding: tuple[_Coding, ...] | msgspec.UnsetType | None = _UNSET


class _Component(msgspec.Struct, frozen=True):
    code: _Concept | msgspec.UnsetType | None = _UNSET


class _Head(msgspec.Struct):
    """What decides whether a resource is read at all: its type and codes (the second and last read of
    its bytes); what the duplicate-member check counts: its contained resources. Codes are immutable
    tuples, so ``worth_reading`` can remember its answer for each combination."""

    resourceType: str | msgspec.UnsetType | None = _UNSET
    code: _Concept | msgspec.UnsetType | None = _UNSET
    component: tuple[_Component, ...] | msgspec.UnsetType | None = _UNSET
    contained: Any = _UNSET


class _NotHandled(Exception):
    """A value the fast path does not read: the body is read the old way."""


_TOP, _HEAD = msgspec.json.Decoder(_Top), msgspec.json.Decoder(_Head)
_ANY = msgspec.json.Decoder()
_FAST_PATH_ERRORS = (
    msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError, _NotHandled,
)  # fmt: skip


@dataclass
class HookBody:
    """The decoded request: the envelope (every member but ``prefetch``, as JSON values) and each
    prefetch key read (``None`` for ``null``; an ``InvalidPrefetch`` to raise when the key is used)."""

    envelope: dict[str, Any]
    prefetch: dict[str, Prefetched] | None = None
    fast: bool = True  # False: read the old way (diagnostics, tests)
    kept: int = field(default=0, repr=False)


def decode_hook_body(raw: bytes, worth_reading: WorthReading) -> HookBody:
    """The body decoded; ``MalformedJson`` (400) when it is not a JSON object or drops FHIR data."""
    try:
        if not raw.isascii():
            raw.decode("utf-8")  # msgspec does not check the UTF-8 of what it skips; orjson does
        top = _TOP.decode(raw)
        body = _fast(top, worth_reading)
    except _FAST_PATH_ERRORS:
        body = _slow(raw)
    refuse_dropped_resources(raw, body.kept)
    return body


def _fast(top: _Top, worth_reading: WorthReading) -> HookBody:
    envelope = {name: getattr(top, name) for name in ENVELOPE if name != "prefetch"}
    envelope = {k: v for k, v in envelope.items() if v is not _UNSET}
    if top.prefetch is None:
        envelope["prefetch"] = None
    body = HookBody(envelope, kept=draft_resources(envelope.get("context")))
    if isinstance(top.prefetch, dict):
        body.prefetch = {}
        for key, value in top.prefetch.items():
            body.prefetch[key], kept = _read_fast(key, value, worth_reading)
            body.kept += kept
    return body


def _slow(raw: bytes) -> HookBody:
    data = json_object(raw)
    envelope = {k: v for k, v in data.items() if k != "prefetch"}
    body = HookBody(envelope, fast=False, kept=kept_resources(data))
    prefetch = data.get("prefetch")
    if "prefetch" in data and not isinstance(prefetch, dict):
        envelope["prefetch"] = prefetch  # pydantic names the problem
    elif isinstance(prefetch, dict):
        body.prefetch = {key: _read_value(key, value) for key, value in prefetch.items()}
    return body


def _read_value(key: str, value: object) -> Prefetched:
    try:
        return read_supplied(key, value)
    except InvalidPrefetch as exc:
        return exc


def _read_fast(key: str, value: _Value | None, worth_reading: WorthReading) -> tuple[Prefetched, int]:
    """One prefetch value: (what it holds, resources counted for the duplicate-member check)."""
    if value is None:
        return None, 0
    kept = 1 + contained_count(value.contained)
    if value.resourceType == "OperationOutcome":
        return _read_value(key, {"resourceType": "OperationOutcome", "issue": value.issue}), kept
    if value.resourceType == "Patient":
        patient = {"resourceType": "Patient", "id": value.id, "birthDate": value.birthDate}
        return _read_value(key, {k: v for k, v in patient.items() if v is not _UNSET}), kept
    if value.resourceType != "Bundle":
        raise _NotHandled(key)
    resources: list[dict[str, Any]] = []
    total = 0
    for entry in value.entry or ():
        if entry.resource is _UNSET:
            continue  # an entry without a resource (as before)
        try:
            head = _HEAD.decode(entry.resource)
        except msgspec.ValidationError:  # not an object, or codes of an unexpected shape
            whole = _ANY.decode(entry.resource)
            if type(whole) is dict:
                total += 1
                kept += count_resources(whole)
                resources.append(whole)  # the normaliser reads (or reports) it as before
            continue
        total += 1
        if head.resourceType is not _UNSET:
            kept += 1 + contained_count(head.contained)
        if head.resourceType == "OperationOutcome":
            total -= 1  # information for the reader, not patient data
            outcome = _ANY.decode(entry.resource)
            if outcome_is_error(outcome):
                return Supplied(problem=outcome_text(outcome) or "OperationOutcome entry"), kept
        elif worth_reading(head.resourceType, _codings(head.code), _component_codings(head.component)):
            resources.append(_ANY.decode(entry.resource))
    page = {"resourceType": "Bundle", "link": value.link} if value.link is not _UNSET else {}
    return Supplied(resources, first_page=page if has_next(page) else None, total=total), kept


def _codings(concept: _Concept | msgspec.UnsetType | None) -> tuple[_Coding, ...] | None:
    return concept.coding if type(concept) is _Concept and type(concept.coding) is tuple else None


def _component_codings(parts: object) -> tuple[tuple[_Coding, ...] | None, ...]:
    if type(parts) is not tuple:
        return ()
    return tuple((_codings(p.code) or ()) if type(p.code) is _Concept else None for p in parts)
