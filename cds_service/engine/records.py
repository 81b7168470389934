"""FHIR JSON -> plain records the facts read. Pure: no I/O, no clock except the ``today`` passed in.

Only resources whose codes fall in some value set become records (a 10,000-Observation prefetch is mostly
irrelevant vitals; skipping them early keeps the engine linear and cheap). Everything the engine cannot
read is kept as an ``Unreadable`` with the reason; the caller decides which of those could hide a red flag.
Status handling (knowledge §4.2) is data: ``rules/status.yaml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from cds_service.engine.dates import DateProblem, FhirDate, parse_fhir_date, plus_years
from cds_service.engine.terminology import Terminology

#: The code system (``rules/code-systems.yaml`` key) whose codes ``Quantity.code`` must be in.
UCUM = "ucum"
#: Dates before this are placeholders for "unknown" (0001-01-01, 1900-01-01), not clinical dates.
EARLIEST_PLAUSIBLE = date(1900, 1, 2)
#: Unmatched codes reported when no known code system is among them (see ``Normaliser._unknown_code``).
_SYSTEM_CHECKED = frozenset({"Condition", "MedicationRequest", "MedicationStatement"})
SUPPORTED_TYPES = ("Condition", "Observation", "MedicationRequest", "MedicationStatement", "ServiceRequest")
_SUPPORTED_FOLDED = frozenset(t.lower() for t in (*SUPPORTED_TYPES, "Patient"))


class Status(StrEnum):
    current = "current"  # counts
    inactive = "inactive"  # resolved / remission / inactive Condition (counts only where a rule says so)
    ended = "ended"  # completed / stopped medication (counts if it ended recently)
    excluded = "excluded"  # refuted, entered-in-error, cancelled: never counts


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """Status vocabularies per resource type, from ``rules/status.yaml``."""

    current: Mapping[str, frozenset[str]]
    inactive: Mapping[str, frozenset[str]]
    ended: Mapping[str, frozenset[str]]
    excluded: Mapping[str, frozenset[str]]
    verification_excluded: frozenset[str]
    negative_text: tuple[str, ...] = ()  # whole-text answers meaning "absent" (regular expressions)
    positive_text: tuple[str, ...] = ()  # ... and meaning "present"

    def answer(self, text: str) -> bool | None:
        """False/True when a free-text answer says absent/present ("denies", "yes"); None otherwise."""
        cleaned = " ".join(text.split())
        if _full_match(self.negative_text, cleaned):
            return False
        if _full_match(self.positive_text, cleaned):
            return True
        return None


@dataclass(frozen=True, slots=True)
class QuantityKind:
    """How an observation's value is read: units (UCUM code -> factor, offset), range, coded values."""

    id: str
    canonical_unit: str
    display_unit: str
    units: Mapping[str, tuple[float, float]]
    plausible: tuple[float, float]
    unitless_ok: bool = False
    integers_only: bool = False
    coded_values: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """One resource, reduced to what rules read."""

    resource_type: str
    id: str | None
    valuesets: frozenset[str]
    code: tuple[str, str] | None  # first matched (system, code), for the trace
    display: str  # for card text only, never matched
    status: Status
    date: FhirDate | None
    date_source: str  # onset | recorded | effective | issued | authored | end | none
    laterality: str | None = None
    severity: frozenset[str] = frozenset()
    present: bool = True  # Observation: positive (true, no value, coded "present"); False = negative
    number: float | None = None  # value in the kind's canonical unit
    value_text: str | None = None  # as shown on a card: "38.6 Cel", "true", "reflex-reduced"
    value_codes: frozenset[str] = frozenset()  # value sets of a valueCodeableConcept
    end: FhirDate | None = None  # medication end of validity / effective end
    recorded: FhirDate | None = None  # Condition.recordedDate (also when the onset is the date used)
    free_text: str = (
        ""  # Condition.code.text and notes: read only by rules that escalate (never by red flags)
    )
    status_note: str | None = None
    site_text: str = ""  # bodySite text and displays, lower case: qualifies a non-specific code (R20.0)

    def ref(self) -> str:
        return f"{self.resource_type}/{self.id}" if self.id else self.resource_type


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Something present in the input that the engine could not use, and why."""

    resource_type: str
    id: str | None
    problem: str
    valuesets: frozenset[str] = frozenset()  # what its code would have meant, when known
    display: str = ""
    code_unknown: bool = False  # no usable coding at all: it could be anything

    def ref(self) -> str:
        return f"{self.resource_type}/{self.id}" if self.id else self.resource_type


@dataclass
class Normalised:
    records: list[Record] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    other_patient: int = 0  # resources about another patient (dropped, counted)
    birth_date: date | None = None


class Normaliser:
    """Turns the patient's FHIR resources into records. One instance per rule set (holds no request state)."""

    def __init__(
        self,
        terminology: Terminology,
        status: StatusPolicy,
        kinds: Mapping[str, QuantityKind],
        laterality_valueset: str,
        negative_valueset: str,
    ) -> None:
        self.terminology = terminology
        self.status = status
        self.kinds_by_vs = {
            vs.id: kinds[vs.value_kind]
            for vs in terminology.valuesets.values()
            if vs.value_kind is not None and vs.value_kind in kinds
        }
        self.laterality_valueset = laterality_valueset
        self.negative_valueset = negative_valueset
        self.not_at_sites = {
            vs.id: re.compile("|".join(vs.not_at_sites), re.IGNORECASE)
            for vs in terminology.valuesets.values()
            if vs.not_at_sites
        }

    def normalise(
        self, resources: Iterable[Mapping[str, Any]], patient_id: str | None, today: date
    ) -> Normalised:
        out = Normalised()
        all_resources = [r for r in resources if isinstance(r, dict)]
        medications = {
            str(r.get("id")): r
            for r in all_resources
            if r.get("resourceType") == "Medication" and r.get("id")
        }
        for resource in all_resources:
            rtype = resource.get("resourceType")
            if rtype == "Patient":
                if patient_id is None or resource.get("id") in (None, patient_id):
                    out.birth_date = _birth_date(resource) or out.birth_date
            elif rtype in SUPPORTED_TYPES:
                self._one(resource, str(rtype), medications, patient_id, today, out)
                if rtype == "Observation" and "component" in resource and type(resource["component"]) is list:
                    for part in self._components(resource):
                        self._one(part, "Observation", medications, patient_id, today, out)
            elif not isinstance(rtype, str) or rtype.lower() in _SUPPORTED_FOLDED:
                out.unreadable.append(_not_a_resource(resource, rtype))
        return out

    # -- per resource ------------------------------------------------------------------------------

    def _one(
        self,
        res: dict[str, Any],
        rtype: str,
        medications: Mapping[str, Mapping[str, Any]],
        patient_id: str | None,
        today: date,
        out: Normalised,
    ) -> None:
        """The hot loop: match the code first (most resources are irrelevant vitals and stop there)."""
        if rtype.startswith("Medication"):
            concept, codings = self._concept(res, rtype, medications)
        else:
            concept = res.get("code")
            found = concept.get("coding") if type(concept) is dict else None
            codings = found if type(found) is list else []
        rid = res.get("id") if isinstance(res.get("id"), str) else None
        if concept is None and rtype.startswith("Medication"):
            out.unreadable.append(
                Unreadable(rtype, rid, "medicationReference could not be resolved", code_unknown=True)
            )
            return
        valuesets, laterality, code, usable = self.terminology.match_codings(codings)
        if not valuesets:
            problem = self._unknown_code(codings, usable) if not usable or rtype in _SYSTEM_CHECKED else None
            if problem is not None:
                out.unreadable.append(
                    Unreadable(rtype, rid, problem, display=_display(concept, codings), code_unknown=True)
                )
            return  # not something any rule reads
        if patient_id is not None and _about_other_patient(res, patient_id):
            out.other_patient += 1
            return
        site_text = _site_text(res.get("bodySite"))
        if site_text and not valuesets.isdisjoint(self.not_at_sites):
            valuesets = frozenset(v for v in valuesets if not self._elsewhere(v, site_text))
            if not valuesets:
                return  # e.g. a muscle strain of the shoulder: nothing any rule reads
        display = _display(concept, codings)
        status, note = self._status(res, rtype, today)
        if status is Status.excluded:
            return
        problems: list[str] = []
        when, source = self._date(res, rtype, out.birth_date, today, problems)
        when = _plausible(when, today, out.birth_date, problems)
        if when is None:
            source = "none"
        fields: dict[str, Any] = {}
        if rtype == "Condition":
            recorded = _optional_date(res.get("recordedDate"))
            fields["recorded"] = _plausible(recorded, today, out.birth_date, problems, "recordedDate ")
            fields["free_text"] = _free_text(res)
            severity = res.get("severity")
            if isinstance(severity, dict):
                fields["severity"] = self.terminology.match_codings(_codings(severity)).valuesets
        elif rtype == "Observation":
            value = self._observation_value(res, valuesets, problems)
            if value is None:
                fields = {}
            else:
                fields.update(value)
        elif rtype.startswith("Medication"):
            fields["end"] = self._medication_end(res, problems)
        for problem in problems:
            out.unreadable.append(Unreadable(rtype, rid, problem, valuesets, display))
        if rtype == "Observation" and value is None:
            return
        out.records.append(
            Record(
                resource_type=rtype,
                id=rid,
                valuesets=valuesets,
                code=code,
                display=display,
                status=status,
                date=when,
                date_source=source,
                laterality=self._laterality(res) or laterality,
                status_note=note,
                site_text=site_text,
                **fields,
            )
        )

    def _components(self, res: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The components of an Observation that a rule could read (coded in some value set, or with no
        usable coding at all, which is reported), each as an Observation of its own with the panel's id,
        status, dates and subject: a temperature inside a vital-signs panel is a temperature (§4.3).
        Components no rule reads (blood pressure parts) are skipped before any copy is made."""
        wanted = []
        for part in res["component"]:
            if type(part) is dict and type(part.get("code")) is dict:
                matched = self.terminology.match_codings(_codings(part["code"]))
                if matched.valuesets or not matched.usable:
                    wanted.append(part)
        if not wanted:
            return []
        skip = ("code", "component", "dataAbsentReason", "interpretation")
        shared = {k: v for k, v in res.items() if k not in skip and not k.startswith("value")}
        return [{**shared, **{k: v for k, v in part.items() if k != "id"}} for part in wanted]

    def _concept(
        self, res: dict[str, Any], rtype: str, medications: Mapping[str, Mapping[str, Any]]
    ) -> tuple[object, list[Any]]:
        """The resource's CodeableConcept and its codings (a medication's through its reference).
        ``(None, [])`` when a medicationReference cannot be resolved."""
        if not rtype.startswith("Medication"):
            concept = res.get("code")
            return concept, _codings(concept)
        concept = res.get("medicationCodeableConcept")
        ref = res.get("medicationReference")
        if concept is None and isinstance(ref, dict):
            medication = _resolve_medication(res, ref, medications)
            if medication is None:
                return None, []
            concept = medication.get("code")
            ingredients = [
                i.get("itemCodeableConcept")
                for i in _list(medication.get("ingredient"))
                if isinstance(i, dict)
            ]
            return concept, [*_codings(concept), *(c for i in ingredients for c in _codings(i))]
        return concept, _codings(concept)

    def _status(self, res: Mapping[str, Any], rtype: str, today: date) -> tuple[Status, str | None]:
        policy = self.status
        if rtype == "Condition":
            verification = _status_code(res.get("verificationStatus"))
            if verification in policy.verification_excluded:
                return Status.excluded, None
            clinical = _status_code(res.get("clinicalStatus"))
            if clinical is None:
                abatement = _abatement(res)
                if abatement is not None and abatement.days_before(today) >= 0:
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

    def _date(
        self, res: Mapping[str, Any], rtype: str, birth: date | None, today: date, problems: list[str]
    ) -> tuple[FhirDate | None, str]:
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

    def _laterality(self, res: Mapping[str, Any]) -> str | None:
        sites = res.get("bodySite")
        concepts = sites if isinstance(sites, list) else [sites]
        lateral = self.terminology
        for concept in concepts:
            if isinstance(concept, dict):
                valuesets, side, _, _ = lateral.match_codings(_codings(concept))
                if self.laterality_valueset in valuesets and side:
                    return side
        return None

    def _observation_value(
        self, res: dict[str, Any], valuesets: frozenset[str], problems: list[str]
    ) -> dict[str, Any] | None:
        """The value fields of an Observation record, or None (with a problem) when it cannot be read."""
        kind = next((self.kinds_by_vs[v] for v in valuesets if v in self.kinds_by_vs), None)
        if "dataAbsentReason" in res and not _has_value(res):
            return {"present": False, "value_text": "no result (dataAbsentReason)"}
        if "valueBoolean" in res:
            value = res["valueBoolean"]
            if not isinstance(value, bool):
                problems.append("valueBoolean is not a boolean")
                return None
            return {"present": value, "value_text": str(value).lower()}
        if "valueCodeableConcept" in res:
            return self._coded_value(res["valueCodeableConcept"], kind, problems)
        if kind is None:
            text = res.get("valueString")
            said = self.status.answer(text) if isinstance(text, str) else None
            if said is not None:
                return {"present": said, "value_text": str(text)[:60]}
            if "valueString" in res or ("valueInteger" in res and not isinstance(res["valueInteger"], int)):
                problems.append("value cannot be interpreted as present or absent")
                return None
            return {}  # coded finding without value (or with a quantity): present
        number, shown, problem = _read_number(res, kind, self._is_ucum)
        if problem is not None:
            problems.append(problem)
            return None
        return {"number": number, "value_text": shown}

    def _coded_value(
        self, concept: object, kind: QuantityKind | None, problems: list[str]
    ) -> dict[str, Any] | None:
        codings = _codings(concept)
        valuesets, _, first, usable = self.terminology.match_codings(codings)
        text = concept.get("text") if isinstance(concept, dict) else None
        said = self.status.answer(text) if isinstance(text, str) and not usable else None
        fields: dict[str, Any] = {
            "value_codes": valuesets,
            "value_text": first[1] if first else _display(concept, codings),
            "present": self.negative_valueset not in valuesets and said is not False,
        }
        if kind is None or (valuesets and not kind.coded_values):
            return fields
        if not kind.coded_values:  # a number is expected, and the code means nothing the rules know
            problems.append(f"coded value {fields['value_text']!r} is not a {kind.id} value")
            return None
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system = self.terminology.system_for(coding.get("system"))
            code = coding.get("code")
            if system is not None and isinstance(code, str):
                number = kind.coded_values.get((system.uri, code.strip()))
                if number is not None:
                    return fields | {"number": number, "value_text": f"{code} ({number:g})"}
        if not valuesets:
            problems.append(f"coded value {fields['value_text']!r} is not a recognised {kind.id} value")
            return None
        return fields

    def _unknown_code(self, codings: list[Any], usable: bool) -> str | None:
        """Why an unmatched code could hide a finding, or None when it is simply about something else.

        A code with no usable coding could be anything. A Condition or medication coded only in systems
        the rules do not know (a local problem-list or formulary code) could be a red flag or an
        anticoagulant; an Observation is not reported for that (EHR flowsheet rows are local-coded by
        the hundred and would bury the note that matters)."""
        if not usable:
            return "code has no coding with a system and code"
        systems = [c.get("system") for c in codings if type(c) is dict]
        if any(self.terminology.system_for(s if isinstance(s, str) else None) for s in systems):
            return None
        return "coded only in a code system the rules do not use; not read"

    def _elsewhere(self, valueset: str, site_text: str) -> bool:
        pattern = self.not_at_sites.get(valueset)
        return pattern is not None and pattern.search(site_text) is not None

    def _is_ucum(self, system: object) -> bool:
        found = self.terminology.system_for(system if isinstance(system, str) else None)
        return found is not None and found.key == UCUM

    def _medication_end(self, res: Mapping[str, Any], problems: list[str]) -> FhirDate | None:
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


# -- helpers ------------------------------------------------------------------------------------------


def _not_a_resource(resource: Mapping[str, Any], rtype: object) -> Unreadable:
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


def _read_number(
    res: Mapping[str, Any], kind: QuantityKind, is_ucum: Callable[[object], bool]
) -> tuple[float | None, str | None, str | None]:
    """Value in the kind's canonical unit, its display, or the reason it cannot be read (never guessed).
    ``Quantity.code`` is read as a UCUM code when ``system`` is absent or names UCUM (``is_ucum``)."""
    unit: str | None = None
    if "valueQuantity" in res:
        q = res["valueQuantity"]
        if not isinstance(q, dict):
            return None, None, "valueQuantity is not an object"
        raw = q.get("value")
        system = q.get("system")
        code = q.get("code") if system is None or is_ucum(system) else None
        unit = code if isinstance(code, str) else None
        if unit is None and isinstance(q.get("unit"), str) and q["unit"] in kind.units:
            unit = q["unit"]  # the human unit spelled exactly as a UCUM code we know
        if unit is None and q.get("unit") is not None and not kind.unitless_ok:
            return None, None, f"unit {str(q.get('unit'))[:20]!r} has no UCUM code"
    elif "valueInteger" in res:
        raw = res["valueInteger"]
    else:
        present = [k for k in res if k.startswith("value")]
        return None, None, f"no numeric value ({', '.join(present) or 'no value'})"
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None, None, f"value {str(raw)[:20]!r} is not a number"
    value = float(raw)
    if unit is None or unit in ("1", ""):
        if not kind.unitless_ok:
            return None, None, f"{kind.id} value {value:g} has no unit; not guessed"
        factor, offset = 1.0, 0.0
        shown = f"{value:g}"
    else:
        conversion = kind.units.get(unit)
        if conversion is None:
            return None, None, f"unit {unit[:20]!r} is not a known {kind.id} unit"
        factor, offset = conversion
        shown = f"{value:g} {unit}"
    canonical = value * factor + offset
    low, high = kind.plausible
    if not low <= canonical <= high:
        return None, None, f"{kind.id} {shown} is implausible; not used"
    if kind.integers_only and canonical != int(canonical):
        return None, None, f"{kind.id} {shown} is not a whole grade"
    if unit not in (None, "1", "", kind.canonical_unit):
        shown += f" = {canonical:.1f} {kind.display_unit}"
    return canonical, shown, None


def _dosage_end(res: Mapping[str, Any]) -> str | None:
    """The latest ``dosage[Instruction].timing.repeat.boundsPeriod.end`` (ISO strings compare by date)."""
    ends: list[str] = []
    for dosage in _list(res.get("dosageInstruction")) + _list(res.get("dosage")):
        timing = dosage.get("timing") if isinstance(dosage, dict) else None
        repeat = timing.get("repeat") if isinstance(timing, dict) else None
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        end = bounds.get("end") if isinstance(bounds, dict) else None
        if isinstance(end, str):
            ends.append(end)
    return max(ends) if ends else None


def _plausible(
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


def _site_text(sites: object) -> str:
    """``bodySite`` (a list on Condition, one concept on Observation) as the words a rule may look for."""
    if sites is None:
        return ""
    parts: list[str] = []
    for concept in sites if isinstance(sites, list) else [sites]:
        if isinstance(concept, dict):
            parts.append(str(concept.get("text") or ""))
            parts += [str(c.get("display") or "") for c in _codings(concept) if isinstance(c, dict)]
    return " | ".join(p for p in parts if p).lower()[:500]


def _has_value(res: Mapping[str, Any]) -> bool:
    return any(k.startswith("value") for k in res)


def _codings(concept: object) -> list[Any]:
    if isinstance(concept, dict):
        codings = concept.get("coding")
        return codings if isinstance(codings, list) else []
    return []


def _display(concept: object, codings: list[Any]) -> str:
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return str(concept["text"])[:120]
    for c in codings:
        if isinstance(c, dict) and isinstance(c.get("display"), str):
            return str(c["display"])[:120]
    for c in codings:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            return str(c["code"])[:60]
    return "(uncoded)"


def _status_code(concept: object) -> str | None:
    for coding in _codings(concept):
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"]).strip().lower()  # "Refuted" is refuted, not an unknown status
    return None


def _full_match(patterns: Iterable[str], text: str) -> bool:
    return any(re.fullmatch(p, text, re.IGNORECASE) for p in patterns)


def _abatement(res: Mapping[str, Any]) -> FhirDate | None:
    value = res.get("abatementDateTime")
    if value is None and isinstance(res.get("abatementPeriod"), Mapping):
        value = res["abatementPeriod"].get("end") or res["abatementPeriod"].get("start")
    if value is None:
        return None
    try:
        return parse_fhir_date(value)
    except DateProblem:
        return None


def _free_text(res: dict[str, Any]) -> str:
    code = res.get("code")
    parts = [code.get("text")] if isinstance(code, dict) else []
    parts += [n.get("text") for n in _list(res.get("note")) if isinstance(n, dict)]
    return " | ".join(p for p in parts if isinstance(p, str))[:2000]


def _optional_date(value: object) -> FhirDate | None:
    if value is None:
        return None
    try:
        return parse_fhir_date(value)
    except DateProblem:
        return None


def _birth_date(patient: Mapping[str, Any]) -> date | None:
    try:
        return parse_fhir_date(patient.get("birthDate")).start
    except DateProblem:
        return None


def _about_other_patient(res: Mapping[str, Any], patient_id: str) -> bool:
    """True only when the resource clearly names another Patient (urn:uuid and contained refs are kept)."""
    for key in ("subject", "patient"):
        ref = res.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            parts = str(ref["reference"]).split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                return parts[-1] != patient_id
    return False


def _resolve_medication(
    res: Mapping[str, Any], ref: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    target = ref.get("reference")
    if isinstance(target, str) and target.startswith("#"):
        for contained in _list(res.get("contained")):
            if isinstance(contained, dict) and contained.get("id") == target[1:]:
                return contained
        return None
    if isinstance(target, str) and "Medication/" in target:
        return medications.get(target.split("Medication/")[-1].split("/")[0])
    return None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
