"""What a fact reads (``Context``: the records, today, the weakness onset, the rules that fired) and
what it answers (``FactValue``), with the time windows every fact shares.

Fail-safe choices, all from the knowledge base:
- an active Condition without any date counts as current (§4.4) and is marked "date unknown";
- an Observation without a date cannot be placed in a window: it does not fire a windowed fact, but it is
  returned as ``undated`` so the card can say so (§4.4, safety note S6);
- an unknown weakness onset satisfies every onset-relative window (§4.3 trauma row; §4.4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from cds_service.engine.dates import FhirDate
from cds_service.engine.params import WindowParams
from cds_service.engine.records import Record, Status


@dataclass
class Context:
    """Everything a fact may read for one evaluation. Built by ``evaluate``; facts never mutate it,
    except through ``set_weakness`` which the evaluator calls once, after the entry rule."""

    today: date
    records: Sequence[Record]
    by_valueset: Mapping[str, Sequence[Record]]
    birth_date: date | None = None
    weakness_evidence: tuple[Record, ...] = ()
    weakness_onset: FhirDate | None = None
    fired: dict[str, bool] = field(default_factory=dict)
    evidence_of: dict[str, tuple[Record, ...]] = field(default_factory=dict)  # of each rule that fired
    pathway_of: Mapping[str, str] = field(default_factory=dict)
    selections: frozenset[str] | None = None  # order-select: "Type/id" of newly selected draft orders

    def with_valuesets(self, names: Iterable[str]) -> list[Record]:
        seen: dict[int, Record] = {}
        for name in names:
            for record in self.by_valueset.get(name, ()):
                seen.setdefault(id(record), record)
        return list(seen.values())

    def set_weakness(self, evidence: Sequence[Record]) -> None:
        self.weakness_evidence = tuple(evidence)
        self.weakness_onset = weakness_onset(evidence, self.today)


@dataclass(frozen=True)
class FactValue:
    """What a fact found: a boolean or a number, the records behind it, and undated near-misses."""

    value: bool | float | None
    evidence: tuple[Record, ...] = ()
    undated: tuple[tuple[Record, float | None], ...] = ()
    notes: tuple[str, ...] = ()


def effective_date(record: Record, today: date) -> FhirDate | None:
    """The date used for windows: an undated active Condition is current (§4.4); undated others: None."""
    if record.date is not None:
        return record.date
    if record.resource_type == "Condition" and record.status is Status.current:
        return FhirDate(date.min, today, "date unknown")  # current, at an unknown time: fail-safe both ways
    return None


def in_window(record: Record, p: WindowParams, ctx: Context) -> bool | None:
    """True/False for a dated record; None when it has no date and the window needs one."""
    if not p.windowed:
        return True
    when = effective_date(record, ctx.today)
    if when is None:
        return None
    checks: list[bool] = []
    if p.within_days is not None:
        checks.append(when.days_before(ctx.today) <= p.within_days)
    if p.relative_to_weakness is not None:
        onset = ctx.weakness_onset
        rel = p.relative_to_weakness
        if onset is None:
            checks.append(True)  # unknown onset: fail-safe
        else:
            ok = True
            if rel.from_days is not None:
                ok &= (when.end - onset.start).days >= rel.from_days
            if rel.to_days is not None:
                ok &= (when.start - onset.end).days <= rel.to_days
            checks.append(ok)
    return all(checks) if p.combine == "all" else any(checks)


_NEGATION = re.compile(r"\b(no|not|without|rule[ds]? out|r/o|negative for|denies|excluded)\b[^.;|]*$", re.I)


def mentions(text: str, patterns: Sequence[str]) -> bool:
    """True when one pattern occurs in ``text`` without a negation earlier in the same clause."""
    for pattern in patterns:
        for match in re.finditer(pattern, text, re.IGNORECASE):
            if not _NEGATION.search(text[max(0, match.start() - 40) : match.start()]):
                return True
    return False


def status_ok(record: Record, mode: str) -> bool:
    if mode == "any-clinical":
        return record.status in (Status.current, Status.inactive)
    return record.status is Status.current


def weakness_onset(evidence: Sequence[Record], today: date) -> FhirDate | None:
    """Knowledge §4.1: earliest Condition onset; else recordedDate; else Observation effective; else issued.

    An undated active weakness Condition makes the onset "current" for red-flag purposes (§4.4).
    """
    for source, types in (
        ("onset", ("Condition",)),
        ("recorded", ("Condition",)),
        ("effective", ("Observation",)),
        ("issued", ("Observation",)),
    ):
        dates = [r.date for r in evidence if r.resource_type in types and r.date_source == source and r.date]
        if dates:
            return min(dates, key=lambda d: d.start)
    if any(r.resource_type == "Condition" and r.date is None for r in evidence):
        return FhirDate(today, today, "date unknown")
    return None
