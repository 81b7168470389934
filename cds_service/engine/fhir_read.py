"""Reading FHIR JSON tolerantly: every field may be missing or of the wrong type in real feeds.

Small functions over plain dicts (the engine's input), shared by the normaliser and its readers of
values and dates. None of them raises on bad input: they answer "nothing usable" and the caller records
why in an ``Unreadable``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from cds_service.engine.dates import FhirDate, optional_date
from cds_service.engine.records import Status, StatusPolicy, Unreadable


def record_status(
    res: Mapping[str, Any], rtype: str, today: date, policy: StatusPolicy
) -> tuple[Status, str | None]:
    """The resource's status as the rules read it (``rules/status.yaml``), and a note when it is guessed."""
    if rtype == "Condition":
        verification = status_code_of(res.get("verificationStatus"))
        if verification in policy.verification_excluded:
            return Status.excluded, None
        clinical = status_code_of(res.get("clinicalStatus"))
        if clinical is None:
            ended = abatement(res)
            if ended is not None and ended.days_before(today) >= 0:
                return Status.inactive, "no clinicalStatus; abatement in the past"
            return Status.current, None
        code = clinical
    elif res.get("doNotPerform") is True:  # a prohibition: the drug is not taken (MedicationRequest)
        return Status.excluded, None
    else:
        raw = res.get("status")
        if not isinstance(raw, str):
            return Status.current, "status missing; counted (fail-safe)"
        code = raw.strip().lower()
    if code in policy.excluded.get(rtype, frozenset()):
        return Status.excluded, None
    if code in policy.inactive.get(rtype, frozenset()):
        return Status.inactive, None
    if code in policy.ended.get(rtype, frozenset()):
        return Status.ended, None
    if code in policy.current.get(rtype, frozenset()):
        return Status.current, None
    return Status.current, f"unrecognised status {code[:30]!r}; counted (fail-safe)"


def codings_of(concept: object) -> list[Any]:
    if isinstance(concept, dict):
        codings = concept.get("coding")
        return codings if isinstance(codings, list) else []
    return []


def display_of(concept: object, codings: list[Any]) -> str:
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return str(concept["text"])[:120]
    for c in codings:
        if isinstance(c, dict) and isinstance(c.get("display"), str):
            return str(c["display"])[:120]
    for c in codings:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            return str(c["code"])[:60]
    return "(uncoded)"


def status_code_of(concept: object) -> str | None:
    for coding in codings_of(concept):
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"]).strip().lower()  # "Refuted" is refuted, not an unknown status
    return None


def abatement(res: Mapping[str, Any]) -> FhirDate | None:
    value = res.get("abatementDateTime")
    if value is None and isinstance(res.get("abatementPeriod"), Mapping):
        value = res["abatementPeriod"].get("end") or res["abatementPeriod"].get("start")
    return optional_date(value)


def free_text_of(res: dict[str, Any]) -> str:
    code = res.get("code")
    parts = [code.get("text")] if isinstance(code, dict) else []
    parts += [n.get("text") for n in as_list(res.get("note")) if isinstance(n, dict)]
    return " | ".join(p for p in parts if isinstance(p, str))[:2000]


def site_text_of(sites: object) -> str:
    """``bodySite`` (a list on Condition, one concept on Observation) as the words a rule may look for."""
    if sites is None:
        return ""
    parts: list[str] = []
    for concept in sites if isinstance(sites, list) else [sites]:
        if isinstance(concept, dict):
            parts.append(str(concept.get("text") or ""))
            parts += [str(c.get("display") or "") for c in codings_of(concept) if isinstance(c, dict)]
    return " | ".join(p for p in parts if p).lower()[:500]


def has_value(res: Mapping[str, Any]) -> bool:
    return any(k.startswith("value") for k in res)


def about_other_patient(res: Mapping[str, Any], patient_id: str) -> bool:
    """True only when the resource clearly names another Patient (urn:uuid and contained refs are kept)."""
    for key in ("subject", "patient"):
        ref = res.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            parts = str(ref["reference"]).split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                return parts[-1] != patient_id
    return False


def resolve_medication(
    res: Mapping[str, Any], ref: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    target = ref.get("reference")
    if isinstance(target, str) and target.startswith("#"):
        for contained in as_list(res.get("contained")):
            if isinstance(contained, dict) and contained.get("id") == target[1:]:
                return contained
        return None
    if isinstance(target, str) and "Medication/" in target:
        return medications.get(target.split("Medication/")[-1].split("/")[0])
    return None


def not_a_resource(resource: Mapping[str, Any], rtype: object) -> Unreadable:
    """An entry that is not a FHIR resource (no ``resourceType``, or ``condition`` for ``Condition``): it
    could be any finding, so it is reported instead of being skipped like a type no rule reads."""
    rid = resource.get("id") if isinstance(resource.get("id"), str) else None
    if not isinstance(rtype, str):
        return Unreadable("Resource", rid, "entry without a resourceType", code_unknown=True)
    return Unreadable(
        rtype[:40],
        rid,
        f"resourceType {rtype[:40]!r} is not a FHIR resource type (case matters)",
        code_unknown=True,
    )


def full_match(patterns: Iterable[str], text: str) -> bool:
    return any(re.fullmatch(p, text, re.IGNORECASE) for p in patterns)


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
