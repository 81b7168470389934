"""The dates a record is placed in time by: onset, recorded, effective, authored, medication end.

A date the rules may use must be plausible: not in the future (a day's grace for time zones) and not
before the patient's life (0001-01-01 and 1900-01-01 are how some systems write "no date").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from cds_service.engine.dates import DateProblem, FhirDate, parse_fhir_date, plus_years
from cds_service.engine.fhir_read import as_list

#: Dates before this are placeholders for "unknown" (0001-01-01, 1900-01-01), not clinical dates.
EARLIEST_PLAUSIBLE = date(1900, 1, 2)


def record_date(
    res: Mapping[str, Any], rtype: str, birth: date | None, today: date, problems: list[str]
) -> tuple[FhirDate | None, str]:
    """The clinical date of a resource and where it came from (onset, recorded, effective, ...)."""
    candidates: list[tuple[str, object]]
    if rtype == "Condition":
        onset: object = res.get("onsetDateTime")
        period = res.get("onsetPeriod")
        if onset is None and isinstance(period, dict):
            span = _period(period, today)
            if span is not None:  # the onset happened some time in the period
                return span, "onset"
            onset = period.get("start") or period.get("end")
        if onset is None and isinstance(res.get("onsetAge"), Mapping):
            age = res["onsetAge"].get("value")
            if birth is not None and isinstance(age, int | float) and not isinstance(age, bool):
                try:
                    d = plus_years(birth, float(age))
                except DateProblem as exc:
                    problems.append(f"onsetAge unreadable ({exc}); treated as undated")
                else:
                    return FhirDate(d, d, f"age {age}"), "onset"
            else:
                problems.append("onsetAge without a readable birthDate or value")
        if onset is None and "onsetString" in res:
            problems.append("onset given only as text (onsetString)")
        candidates = [("onset", onset), ("recorded", res.get("recordedDate"))]
    elif rtype == "Observation":
        eff: object = res.get("effectiveDateTime") or res.get("effectiveInstant")
        period = res.get("effectivePeriod")
        if eff is None and isinstance(period, dict):
            eff = period.get("end") or period.get("start")
        candidates = [("effective", eff), ("issued", res.get("issued"))]
    elif rtype == "MedicationStatement":
        eff = res.get("effectiveDateTime")
        period = res.get("effectivePeriod")
        if eff is None and isinstance(period, dict):
            eff = period.get("start") or period.get("end")
        candidates = [("effective", eff), ("asserted", res.get("dateAsserted"))]
    else:
        candidates = [("authored", res.get("authoredOn"))]
    for source, value in candidates:
        if value is None:
            continue
        try:
            return parse_fhir_date(value), source
        except DateProblem as exc:
            problems.append(f"{source} date unreadable ({exc}); treated as undated")
    return None, "none"


def medication_end(res: Mapping[str, Any], problems: list[str]) -> FhirDate | None:
    """When a medication stopped (validity end, effective end, or the dosage's bounds)."""
    if res.get("resourceType") == "MedicationRequest":
        dispense = res.get("dispenseRequest")
        validity = dispense.get("validityPeriod") if isinstance(dispense, dict) else None
        end = validity.get("end") if isinstance(validity, dict) else None
    else:
        period = res.get("effectivePeriod")
        end = period.get("end") if isinstance(period, dict) else res.get("effectiveDateTime")
    if end is None:
        end = _dosage_end(res)  # the last day of the dosage's timing bounds: when the drug was stopped
    if end is None:
        return None
    try:
        return parse_fhir_date(end)
    except DateProblem as exc:
        problems.append(f"end of medication unreadable ({exc})")
        return None


def plausible(
    when: FhirDate | None, today: date, birth: date | None, problems: list[str], what: str = ""
) -> FhirDate | None:
    """``when`` as the rules may use it, or None (with the reason in ``problems``) when it cannot be a
    clinical date: in the future, or before the patient's life. A partial date covering today ends today."""
    if when is None:
        return None
    if (when.start - today).days > 1:  # a day's grace for time zones
        problems.append(f"{what}date {when.text} is in the future; treated as undated")
        return None
    if when.end > today:
        return when.until(today)  # "2026-11" read on 21 November means 1-21 November
    if when.end < EARLIEST_PLAUSIBLE or (birth and when.end < birth):
        # 0001-01-01 (.NET DateTime.MinValue) and 1900-01-01 are how some systems write "no date"
        problems.append(f"{what}date {when.text} is before the patient's life; treated as undated")
        return None
    return when


def _period(period: Mapping[str, Any], today: date) -> FhirDate | None:
    """A Period with a readable start and a readable end that has passed, as one interval (None
    otherwise: the caller reads the start). An end in the future (9999-12-31) means "still going", not
    "the onset may be today"."""
    try:
        start, end = parse_fhir_date(period.get("start")), parse_fhir_date(period.get("end"))
    except DateProblem:
        return None
    if end.end < start.start or (end.start - today).days > 1:
        return None
    return FhirDate(start.start, end.end, f"{start.text} to {end.text}")


def _dosage_end(res: Mapping[str, Any]) -> str | None:
    """The latest ``dosage[Instruction].timing.repeat.boundsPeriod.end`` (ISO strings compare by date)."""
    ends: list[str] = []
    for dosage in as_list(res.get("dosageInstruction")) + as_list(res.get("dosage")):
        timing = dosage.get("timing") if isinstance(dosage, dict) else None
        repeat = timing.get("repeat") if isinstance(timing, dict) else None
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        end = bounds.get("end") if isinstance(bounds, dict) else None
        if isinstance(end, str):
            ends.append(end)
    return max(ends) if ends else None


def birth_date_of(patient: Mapping[str, Any]) -> date | None:
    try:
        return parse_fhir_date(patient.get("birthDate")).start
    except DateProblem:
        return None
