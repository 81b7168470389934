"""The engine's plain data: one ``Record`` per FHIR resource a rule can read, and ``Unreadable`` for
what was present but could not be used (and why). Built by ``normalise``; read by the facts.

Status handling (knowledge §4.2) is data: ``rules/status.yaml`` becomes a ``StatusPolicy``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from cds_service.engine.dates import FhirDate

#: The resource types records are made of (Patient gives the birth date; Medication is read through them).
SUPPORTED_TYPES = ("Condition", "Observation", "MedicationRequest", "MedicationStatement", "ServiceRequest")


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
        if full_match(self.negative_text, cleaned):
            return False
        if full_match(self.positive_text, cleaned):
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


def full_match(patterns: Iterable[str], text: str) -> bool:
    return any(re.fullmatch(p, text, re.IGNORECASE) for p in patterns)
