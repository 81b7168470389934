"""Test patients: build FHIR R4 transaction Bundles from compact case descriptions, and shift their dates.

The compact form is the one of ``vignettes-public.json`` (dates as ``T-6d``, ``T-3w``, ``T-4m``, ``T-2y``
relative to "today" = T), so clinicians' vignettes and our own extra cases are written the same way.
Every resource is validated with ``fhir.resources.R4B`` when built. Fixture bundles on disk carry absolute
dates computed from ``ANCHOR``; ``shift_dates`` moves a bundle to another "today" (the loader uses it).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

ANCHOR = date(2026, 1, 15)
"""The "today" that fixture files on disk are written for."""

SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "ICD": "http://hl7.org/fhir/sid/icd-10-cm",
    "LOINC": "http://loinc.org",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "LOCAL": "http://example.org/fhir/CodeSystem/hip-weakness-cds-local",
}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_REL = re.compile(r"^T([+-])(\d+)([dwmy])$")
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
_DATE_KEYS = re.compile(r"^\d{4}-\d{2}-\d{2}")


def relative_date(text: str, today: date) -> date:
    """``T-6d`` -> today minus 6 days (m = 30 days, y = 365 days, as in the vignettes)."""
    m = _REL.match(text.strip())
    if m is None:
        raise ValueError(f"not a relative date: {text!r}")
    days = int(m[2]) * _UNIT_DAYS[m[3]]
    return today - timedelta(days=days) if m[1] == "-" else today + timedelta(days=days)


def _when(value: str | None, today: date) -> str | None:
    if value is None:
        return None
    if value.startswith("T"):
        return relative_date(value, today).isoformat()
    return value


def _coding(c: Mapping[str, Any]) -> dict[str, Any]:
    system = SYSTEMS.get(c["system"], c["system"])
    out = {"system": system, "code": c["code"]}
    if c.get("display"):
        out["display"] = c["display"]
    return out


def _concept(
    c: Mapping[str, Any], extra: Iterable[Mapping[str, Any]] = (), text: str | None = None
) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [_coding(c), *(_coding(x) for x in extra)]}
    if text:
        concept["text"] = text
    return concept


def _value(value: Mapping[str, Any]) -> dict[str, Any]:
    if "integer" in value:
        return {"valueInteger": value["integer"]}
    if "boolean" in value:
        return {"valueBoolean": value["boolean"]}
    if "quantity" in value:
        q = dict(value["quantity"])
        q.setdefault("system", "http://unitsofmeasure.org")
        if q.get("code") is None:
            q.pop("system")
            q.pop("code", None)
        return {"valueQuantity": q}
    if "codeableConcept" in value:
        return {"valueCodeableConcept": _concept(value["codeableConcept"])}
    if "string" in value:
        return {"valueString": value["string"]}
    raise ValueError(f"unknown value form: {value}")


def build_resource(spec: Mapping[str, Any], patient_id: str, rid: str, today: date) -> dict[str, Any]:
    """One FHIR resource from a compact spec (``fhir`` members are merged in as-is, for odd-form tests)."""
    rtype = spec["type"]
    subject = {"reference": f"Patient/{patient_id}"}
    res: dict[str, Any] = {"resourceType": rtype, "id": rid}
    if rtype == "Condition":
        if spec.get("clinicalStatus") and spec.get("verificationStatus") != "entered-in-error":
            res["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": spec["clinicalStatus"]}]}
        if spec.get("verificationStatus"):
            res["verificationStatus"] = {
                "coding": [{"system": VERIFICATION, "code": spec["verificationStatus"]}]
            }
        res["code"] = _concept(spec, spec.get("additionalCodings", ()), spec.get("text"))
        if spec.get("severity"):
            res["severity"] = _concept(spec["severity"])
        if spec.get("bodySite"):
            res["bodySite"] = [_concept(spec["bodySite"])]
        res["subject"] = subject
        for key, field in (
            ("onset", "onsetDateTime"),
            ("abatement", "abatementDateTime"),
            ("recorded", "recordedDate"),
        ):
            if spec.get(key):
                res[field] = _when(spec[key], today)
        if spec.get("annotation"):
            res["note"] = [{"text": spec["annotation"]}]
    elif rtype == "Observation":
        res["status"] = spec.get("status", "final")
        res["code"] = _concept(spec, spec.get("additionalCodings", ()), spec.get("text"))
        res["subject"] = subject
        if spec.get("effective"):
            res["effectiveDateTime"] = _when(spec["effective"], today)
        if spec.get("value") is not None:
            res.update(_value(spec["value"]))
        if spec.get("bodySite"):
            res["bodySite"] = _concept(spec["bodySite"])
        if spec.get("components"):
            res["component"] = [{"code": _concept(c), **_value(c["value"])} for c in spec["components"]]
    elif rtype in ("MedicationRequest", "MedicationStatement"):
        res["status"] = spec.get("status", "active")
        if rtype == "MedicationRequest":
            res["intent"] = spec.get("intent", "order")
        res["medicationCodeableConcept"] = _concept(spec)
        res["subject"] = subject
        if spec.get("authoredOn"):
            res["authoredOn"] = _when(spec["authoredOn"], today)
        if spec.get("effectiveEnd"):
            period = {"start": _when(spec.get("effective"), today), "end": _when(spec["effectiveEnd"], today)}
            res["effectivePeriod"] = {k: v for k, v in period.items() if v}
        elif spec.get("effective"):
            res["effectiveDateTime"] = _when(spec["effective"], today)
        if spec.get("validityEnd"):
            res["dispenseRequest"] = {"validityPeriod": {"end": _when(spec["validityEnd"], today)}}
    elif rtype == "ServiceRequest":
        res["status"] = spec.get("status", "draft")
        res["intent"] = spec.get("intent", "order")
        res["code"] = _concept(spec)
        res["subject"] = subject
    else:
        raise ValueError(f"unsupported resource type in a case: {rtype}")
    for key, value in (spec.get("fhir") or {}).items():
        if value is None:
            res.pop(key, None)
        else:
            res[key] = value
    return res


#: Synthetic names, so an EHR or the sandbox shows a person rather than "Unknown"; picked from the case id,
#: so regenerating the fixtures gives the same name. None is a real patient.
GIVEN = {
    "female": ("Alice", "Beatriz", "Chloe", "Dana", "Elif", "Fatima", "Grace", "Hana", "Ingrid", "Joy"),
    "male": ("Aaron", "Bruno", "Carlos", "David", "Emeka", "Felix", "Gareth", "Hugo", "Ivan", "Jonas"),
}
FAMILY = (
    "Ashworth", "Brennan", "Castillo", "Dimitrov", "Eriksen", "Fairweather", "Gallagher", "Haddad",
    "Iwasaki", "Jovanovic", "Kowalski", "Lindqvist", "Mbeki", "Novak", "Okafor", "Petrov", "Quinlan",
    "Rasmussen", "Sandoval", "Thorne",
)  # fmt: skip


def synthetic_name(case_id: str, gender: str | None) -> dict[str, Any]:
    """A stable, made-up HumanName for a test case (``text`` says it is synthetic)."""
    digest = hashlib.sha256(case_id.encode()).digest()
    given = GIVEN.get(gender or "", GIVEN["female"] + GIVEN["male"])
    first, family = given[digest[0] % len(given)], FAMILY[digest[1] % len(FAMILY)]
    return {"use": "official", "family": family, "given": [first], "text": f"{first} {family} (synthetic)"}


def build_patient(case: Mapping[str, Any], patient_id: str, today: date) -> dict[str, Any]:
    p = case.get("patient") or {}
    patient: dict[str, Any] = {"resourceType": "Patient", "id": patient_id}
    patient["name"] = [synthetic_name(str(case.get("id", patient_id)), p.get("gender"))]
    if p.get("gender"):
        patient["gender"] = p["gender"]
    if p.get("ageYears") is not None:
        born = (
            today.replace(year=today.year - int(p["ageYears"]))
            if not (today.month == 2 and today.day == 29)
            else today.replace(year=today.year - int(p["ageYears"]), day=28)
        )
        patient["birthDate"] = born.isoformat()
    return patient


def case_resources(
    case: Mapping[str, Any], today: date, patient_id: str | None = None
) -> list[dict[str, Any]]:
    """Patient first, then the case's resources, all as FHIR R4 JSON."""
    pid = patient_id or case_patient_id(case)
    out = [build_patient(case, pid, today)]
    for i, spec in enumerate(case.get("resources", []), start=1):
        out.append(build_resource(spec, pid, f"{pid}-{spec['type'][:3].lower()}-{i}", today))
    return out


def case_patient_id(case: Mapping[str, Any]) -> str:
    return "hw-" + re.sub(r"[^a-z0-9\-]", "-", str(case["id"]).lower())


def transaction_bundle(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle with PUT entries (stable ids: loading twice is idempotent)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def validate_r4(resources: Iterable[Mapping[str, Any]]) -> None:
    """Validate with fhir.resources R4B models (raises pydantic ValidationError on the first bad one)."""
    from fhir.resources.R4B import get_fhir_model_class

    for resource in resources:
        get_fhir_model_class(str(resource["resourceType"])).model_validate(resource)


def searchset(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    items = list(resources)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(items),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in items],
    }


def shift_dates(value: Any, days: int) -> Any:
    """A deep copy with every FHIR date/dateTime/instant string moved by ``days`` (ids, codes untouched)."""
    if days == 0:
        return copy.deepcopy(value)
    if isinstance(value, dict):
        return {
            k: (v if k in ("id", "code", "reference", "fullUrl", "url", "system") else shift_dates(v, days))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [shift_dates(v, days) for v in value]
    if isinstance(value, str) and _DATE_KEYS.match(value):
        return _shift_one(value, days)
    return value


def _shift_one(text: str, days: int) -> str:
    try:
        if len(text) == 10:
            return (date.fromisoformat(text) + timedelta(days=days)).isoformat()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        shifted = (moment + timedelta(days=days)).isoformat()
        return shifted.replace("+00:00", "Z") if text.endswith("Z") else shifted
    except ValueError:
        return text
