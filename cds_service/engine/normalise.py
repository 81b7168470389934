"""FHIR JSON -> records the facts read. Pure: no I/O, no clock except the ``today`` passed in.

Only resources whose codes fall in some value set become records (a 10,000-Observation prefetch is mostly
irrelevant vitals; skipping them early keeps the engine linear and cheap). Everything the engine cannot
read is kept as an ``Unreadable`` with the reason; the caller decides which of those could hide a red flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from cds_service.engine.dates import optional_date
from cds_service.engine.fhir_read import (
    about_other_patient,
    as_list,
    codings_of,
    display_of,
    free_text_of,
    not_a_resource,
    record_status,
    resolve_medication,
    site_text_of,
)
from cds_service.engine.record_dates import (
    birth_date_of,
    medication_end,
    plausible,
    record_date,
)
from cds_service.engine.records import (
    SUPPORTED_TYPES,
    Normalised,
    QuantityKind,
    Record,
    Status,
    StatusPolicy,
    Unreadable,
)
from cds_service.engine.terminology import CodingLike, Terminology
from cds_service.engine.values import ValueReader

#: Unmatched codes reported when no known code system is among them (see ``Normaliser._unknown_code``).
_SYSTEM_CHECKED = frozenset({"Condition", "MedicationRequest", "MedicationStatement"})
_SUPPORTED_FOLDED = frozenset(t.lower() for t in (*SUPPORTED_TYPES, "Patient"))
_KEPT_TYPES = frozenset({*SUPPORTED_TYPES, "Patient", "Medication", "OperationOutcome"})
#: Distinct code combinations whose ``worth_reading`` answer is remembered (cleared when full).
_WORTH_MEMO = 4096


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
        self._worth: dict[object, bool] = {}
        self.status = status
        self.values = ValueReader(terminology, status, kinds, negative_valueset)
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
                    out.birth_date = birth_date_of(resource) or out.birth_date
            elif rtype in SUPPORTED_TYPES:
                self._one(resource, str(rtype), medications, patient_id, today, out)
                if rtype == "Observation" and "component" in resource and type(resource["component"]) is list:
                    for part in self._components(resource):
                        self._one(part, "Observation", medications, patient_id, today, out)
            elif not isinstance(rtype, str) or rtype.lower() in _SUPPORTED_FOLDED:
                out.unreadable.append(not_a_resource(resource, rtype))
        return out

    def worth_reading(
        self,
        rtype: object,
        codings: Iterable[CodingLike] | None,
        components: Iterable[Iterable[CodingLike] | None] = (),
    ) -> bool:
        """Whether ``normalise`` could make anything of a resource, from its type, its ``code``'s codings
        (None: no code) and each ``component``'s (None: a component without a code object, which is
        skipped): False only where it would certainly skip it, so that a decoder can leave the rest of
        the resource unread (most of a prefetch is vital signs and laboratory results no rule reads).
        Every other type the normaliser reads, a misspelt or missing type (reported), a Medication (read
        through references) and an OperationOutcome (the prefetch ladder reads it) are kept.

        The answer depends only on the codes and the rule set, and a prefetch repeats a few dozen codes
        over thousands of results, so answers are remembered when the codings come as hashable tuples
        (the decoder's immutable structures): a lookup instead of a walk per resource."""
        if rtype != "Observation":
            return not isinstance(rtype, str) or rtype in _KEPT_TYPES or rtype.lower() in _SUPPORTED_FOLDED
        key = (codings, components)
        try:
            return self._worth[key]
        except KeyError:
            pass
        except TypeError:  # unhashable codings (dicts, lists): answered without the memo
            return self._observation_worth(codings, components)
        if len(self._worth) >= _WORTH_MEMO:
            self._worth.clear()
        verdict = self._worth[key] = self._observation_worth(codings, components)
        return verdict

    def _observation_worth(
        self, codings: Iterable[CodingLike] | None, components: Iterable[Iterable[CodingLike] | None]
    ) -> bool:
        worth = self.terminology.worth_reading
        return worth(codings or ()) or any(part is not None and worth(part) for part in components)

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
                    Unreadable(rtype, rid, problem, display=display_of(concept, codings), code_unknown=True)
                )
            return  # not something any rule reads
        if patient_id is not None and about_other_patient(res, patient_id):
            out.other_patient += 1
            return
        site_text = site_text_of(res.get("bodySite"))
        if site_text and not valuesets.isdisjoint(self.not_at_sites):
            valuesets = frozenset(v for v in valuesets if not self._elsewhere(v, site_text))
            if not valuesets:
                return  # e.g. a muscle strain of the shoulder: nothing any rule reads
        display = display_of(concept, codings)
        status, note = record_status(res, rtype, today, self.status)
        if status is Status.excluded:
            return
        problems: list[str] = []
        when, source = record_date(res, rtype, out.birth_date, today, problems)
        when = plausible(when, today, out.birth_date, problems)
        if when is None:
            source = "none"
        fields: dict[str, Any] = {}
        if rtype == "Condition":
            recorded = optional_date(res.get("recordedDate"))
            fields["recorded"] = plausible(recorded, today, out.birth_date, problems, "recordedDate ")
            fields["free_text"] = free_text_of(res)
            severity = res.get("severity")
            if isinstance(severity, dict):
                fields["severity"] = self.terminology.match_codings(codings_of(severity)).valuesets
        elif rtype == "Observation":
            value = self.values.observation_value(res, valuesets, problems)
            if value is None:
                fields = {}
            else:
                fields.update(value)
        elif rtype.startswith("Medication"):
            fields["end"] = medication_end(res, problems)
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
                matched = self.terminology.match_codings(codings_of(part["code"]))
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
            return concept, codings_of(concept)
        concept = res.get("medicationCodeableConcept")
        ref = res.get("medicationReference")
        if concept is None and isinstance(ref, dict):
            medication = resolve_medication(res, ref, medications)
            if medication is None:
                return None, []
            concept = medication.get("code")
            ingredients = [
                i.get("itemCodeableConcept")
                for i in as_list(medication.get("ingredient"))
                if isinstance(i, dict)
            ]
            return concept, [*codings_of(concept), *(c for i in ingredients for c in codings_of(i))]
        return concept, codings_of(concept)

    def _laterality(self, res: Mapping[str, Any]) -> str | None:
        sites = res.get("bodySite")
        concepts = sites if isinstance(sites, list) else [sites]
        lateral = self.terminology
        for concept in concepts:
            if isinstance(concept, dict):
                valuesets, side, _, _ = lateral.match_codings(codings_of(concept))
                if self.laterality_valueset in valuesets and side:
                    return side
        return None

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
