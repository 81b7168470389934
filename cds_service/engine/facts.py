"""The vocabulary rules are written in: named facts over normalised records, and comparison operators.

Each fact is a pure function ``(ctx, params) -> FactValue`` with a pydantic model for its parameters;
rule files refer to facts by name (``fact: finding``) and ``registry`` validates every use at start-up.
Thresholds and windows are parameters, so changing one is a data change. ``python -m cds_service.engine
.facts`` (or ``GET /rules/vocabulary``) lists the vocabulary for rule authors.

Fail-safe choices, all from the knowledge base:
- an active Condition without any date counts as current (§4.4) and is marked "date unknown";
- an Observation without a date cannot be placed in a window: it does not fire a windowed fact, but it is
  returned as ``undated`` so the card can say so (§4.4, safety note S6);
- an unknown weakness onset satisfies every onset-relative window (§4.3 trauma row; §4.4).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cds_service.engine.dates import FhirDate
from cds_service.engine.model import Regex
from cds_service.engine.records import Record, Status

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


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


# -- parameter models --------------------------------------------------------------------------------


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelativeWindow(Params):
    """Finding date minus weakness onset, in days: ``from_days <= delta <= to_days``."""

    from_days: int | None = None
    to_days: int | None = None


class WindowParams(Params):
    valueset: str | list[str]
    within_days: int | None = Field(None, ge=0, description="Dated within the last N days.")
    relative_to_weakness: RelativeWindow | None = None
    combine: Literal["all", "any"] = Field("all", description="How the two windows combine.")

    @property
    def valuesets(self) -> list[str]:
        return [self.valueset] if isinstance(self.valueset, str) else list(self.valueset)

    @property
    def windowed(self) -> bool:
        return self.within_days is not None or self.relative_to_weakness is not None


class FindingParams(WindowParams):
    status: Literal["current", "any-clinical"] = "current"
    resource_types: list[Literal["Condition", "Observation"]] = ["Condition", "Observation"]
    severity: str | None = Field(None, description="Condition.severity must be in this value set.")
    not_severity: str | None = Field(None, description="Condition.severity must not be in this value set.")
    or_recorded: bool = Field(
        False, description="A Condition also counts when its recordedDate is in the window."
    )
    bilateral: bool = Field(
        False, description="Findings on both sides are required (left and right, or bilateral)."
    )
    site_matches: list[Regex] | None = Field(
        None,
        description="Patterns (regular expressions), one of which the finding's bodySite text or display "
        "must contain: a non-specific code counts only at this site (codes.md: R20.0 at a saddle site).",
    )
    text_matches: list[Regex] | None = Field(
        None,
        description="Patterns (regular expressions), one of which the finding's free text (code.text, notes) "
        "must contain, not negated. Escalation only (knowledge §5.4 M-STR-3); never for red flags.",
    )


class CodedValueParams(WindowParams):
    answers: str = Field(description="Value set of valueCodeableConcept answers that count.")


class ScoreParams(WindowParams):
    per_side: bool = True
    episode_max: float | None = Field(
        None, description="Earlier values up to this belong to the same episode (weakness onset)."
    )


class QuantityParams(WindowParams):
    aggregate: Literal["max", "min", "latest"]


class MedicationParams(Params):
    valueset: str
    ended_within_days: int = Field(ge=0, description="Completed/stopped medication still counts this long.")


class RuleParams(Params):
    rules: list[str] | None = None
    pathways: list[str] | None = None
    with_evidence: bool = Field(
        False, description="Show the findings behind the rules that fired (e.g. which red flag) on the card."
    )

    @model_validator(mode="after")
    def _one_of(self) -> RuleParams:
        if not (self.rules or self.pathways):
            raise ValueError("give rules or pathways")
        return self


class DraftOrderParams(Params):
    valueset: str
    selected_only: bool = Field(False, description="order-select: only the newly selected orders.")


class NoParams(Params):
    pass


# -- helpers -------------------------------------------------------------------------------------------


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


def _status_ok(record: Record, mode: str) -> bool:
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


# -- facts ---------------------------------------------------------------------------------------------


def finding(ctx: Context, p: FindingParams) -> FactValue:
    """A current (or, for ``any-clinical``, resolved too) Condition or positive Observation in the value
    set, optionally within a time window and with a severity."""
    hits: list[Record] = []
    undated: list[tuple[Record, float | None]] = []
    for r in ctx.with_valuesets(p.valuesets):
        if r.resource_type not in p.resource_types or not _status_ok(r, p.status) or not r.present:
            continue
        if p.severity is not None and p.severity not in r.severity:
            continue
        if p.not_severity is not None and p.not_severity in r.severity:
            continue
        if p.text_matches is not None and not mentions(r.free_text, p.text_matches):
            continue
        if p.site_matches is not None and not mentions(r.site_text, p.site_matches):
            continue  # the site must be named, and not negated ("not perineal: lateral thigh")
        inside = in_window(r, p, ctx)
        if not inside and p.or_recorded and r.recorded is not None:
            inside = in_window(replace(r, date=r.recorded), p, ctx)
        if inside is None:
            undated.append((r, None))
        elif inside:
            hits.append(r)
    if p.bilateral:
        sides = {r.laterality for r in hits}
        if not ("bilateral" in sides or {"left", "right"} <= sides):
            return FactValue(False, (), tuple(undated))
        hits = [r for r in hits if r.laterality]
    return FactValue(bool(hits), tuple(hits), tuple(undated))


def coded_value(ctx: Context, p: CodedValueParams) -> FactValue:
    """An Observation in the value set whose coded answer is in ``answers`` (e.g. reflex reduced)."""
    hits: list[Record] = []
    undated: list[tuple[Record, float | None]] = []
    for r in ctx.with_valuesets(p.valuesets):
        if (
            r.resource_type != "Observation"
            or r.status is not Status.current
            or p.answers not in r.value_codes
        ):
            continue
        inside = in_window(r, p, ctx)
        if inside is None:
            undated.append((r, None))
        elif inside:
            hits.append(r)
    return FactValue(bool(hits), tuple(hits), tuple(undated))


def _numbers(ctx: Context, p: WindowParams) -> tuple[list[Record], list[tuple[Record, float | None]]]:
    """Numeric observations in the value set: (dated and inside the window, undated). A record without a
    date is never "dated", whatever the window: ordering and windows need a date."""
    dated: list[Record] = []
    undated: list[tuple[Record, float | None]] = []
    for r in ctx.with_valuesets(p.valuesets):
        if r.resource_type != "Observation" or r.status is not Status.current or r.number is None:
            continue
        if r.date is None:
            undated.append((r, r.number))
        elif in_window(r, p, ctx):
            dated.append(r)
    return dated, undated


def _by_side(records: Iterable[Record]) -> dict[str | None, list[Record]]:
    sides: dict[str | None, list[Record]] = {}
    for r in records:
        sides.setdefault(r.laterality, []).append(r)
    return sides


def _sort_key(r: Record) -> tuple[datetime, datetime]:
    assert r.date is not None
    return (r.date.earliest, r.date.latest)


def _before(a: Record, b: Record) -> bool:
    """``a`` certainly happened before ``b``. Two date-only values are calendar days of the sending
    system, compared by day; two timed values by their moments; a date-only value against a timed one
    allows for the unknown zone of the day (``FhirDate.earliest``/``latest``)."""
    da, db = a.date, b.date
    assert da is not None and db is not None
    if da.at is None and db.at is None:
        return da.end < db.start
    if da.at is not None and db.at is not None:
        return da.at < db.at
    return da.latest < db.earliest


def _latest_candidates(records: Sequence[Record]) -> list[Record]:
    """The dated records that may be the most recent: those not certainly before another one (the same
    day without times, overlapping partial dates, a day against a time of that day). Linear: a record is
    before some other one exactly when it is before the newest date-only one or the newest timed one."""
    dated = [r for r in records if r.date is not None]
    days = [r for r in dated if r.date and r.date.at is None]
    timed = [r for r in dated if r.date and r.date.at is not None]
    newest = [max(group, key=_sort_key) for group in (days, timed) if group]
    return [r for r in dated if not any(_before(r, n) for n in newest)]


def _latest(records: Sequence[Record]) -> Record:
    """The most recent of dated numeric records; among equally recent ones the lowest value (a worse
    grade, a lower weight), ties broken by id, so that the answer never depends on a Bundle's order."""
    return min(_latest_candidates(records), key=_low_first)


def _low_first(r: Record) -> tuple[float, str]:
    return (r.number if r.number is not None else math.inf, r.id or "")


def _largest_fall(records: Sequence[Record]) -> tuple[Record, Record] | None:
    """(earlier, latest) with the largest fall from a value certainly before a possibly-latest value to
    it: every candidate for "latest" is tried, so an ambiguous order can only reveal a decline."""
    best: tuple[float, Record, Record] | None = None
    distinct: dict[tuple[Any, ...], Record] = {}  # same value at the same time: the same answer
    for r in sorted(_latest_candidates(records), key=_low_first):
        assert r.date is not None
        distinct.setdefault((r.number, r.date.start, r.date.end, r.date.at), r)
    for latest in distinct.values():
        earlier = [r for r in records if _before(r, latest)]
        if not earlier or latest.number is None:
            continue
        top = max(earlier, key=lambda r: (r.number if r.number is not None else -math.inf, r.id or ""))
        assert top.number is not None
        if best is None or top.number - latest.number > best[0]:
            best = (top.number - latest.number, top, latest)
    return None if best is None else (best[1], best[2])


def _side_groups(records: Sequence[Record], per_side: bool) -> list[list[Record]]:
    """Records compared with each other: per body side, where a bilateral record belongs to the left and
    the right, and a record of unknown side joins every side (and forms a group of its own); or all
    together."""
    if not per_side:
        return [list(records)] if records else []
    sides = _by_side(records)
    unknown = sides.pop(None, [])
    both = sides.pop("bilateral", [])
    lateral = [side + both + unknown for side in sides.values()]
    groups = lateral or ([both + unknown] if both else [])
    return [*groups, unknown] if unknown else groups


def latest_score(ctx: Context, p: ScoreParams) -> FactValue:
    """Lowest over body sides of each side's latest score (MRC grade). The evidence is, per side, the
    latest observation plus the earlier ones of the same episode (consecutive values <= ``episode_max``).
    A side with only undated scores uses its lowest undated score (§4.4: undated findings count for HW).
    Scores of the same day without times count as equally recent: the lowest is the latest."""
    dated, undated = _numbers(ctx, p)
    groups = _by_side(dated) if p.per_side else ({None: dated} if dated else {})
    values: list[float] = []
    evidence: list[Record] = []
    for side_records in groups.values():
        latest = _latest(side_records)
        assert latest.number is not None
        values.append(latest.number)
        evidence.append(latest)
        if p.episode_max is not None and latest.number <= p.episode_max:
            earlier_ones = sorted((r for r in side_records if _before(r, latest)), key=_sort_key)
            for earlier in reversed(earlier_ones):
                if earlier.number is None or earlier.number > p.episode_max:
                    break
                evidence.append(earlier)
    loose = [r for r, _ in undated]
    undated_groups = _by_side(loose) if p.per_side else ({None: loose} if loose else {})
    for side, side_records in undated_groups.items():
        if side not in groups:
            best = min(side_records, key=lambda r: r.number if r.number is not None else 99.0)
            assert best.number is not None
            values.append(best.number)
            evidence.append(best)
    if not values:
        return FactValue(None)
    return FactValue(min(values), tuple(evidence))


def score_decline(ctx: Context, p: ScoreParams) -> FactValue:
    """How far the latest score (MRC grade) in the window is below the highest earlier one (knowledge
    §4.3: "latest lower than an earlier one"), per side (a score of unknown side compared with every
    side). Two scores of the same day are ordered by their times; without times they are equally recent."""
    dated, _ = _numbers(ctx, p)
    best: float | None = None
    pair: tuple[Record, ...] = ()
    for group in _side_groups(dated, p.per_side):
        found = _largest_fall(group)
        if found is None:
            continue
        top, latest = found
        assert top.number is not None and latest.number is not None
        drop = max(top.number - latest.number, 0.0)
        if best is None or drop > best:
            best, pair = drop, ((top, latest) if drop > 0 else ())
    return FactValue(best, pair)


def quantity(ctx: Context, p: QuantityParams) -> FactValue:
    """The max, min or latest value (canonical unit) of an Observation in the window."""
    dated, undated = _numbers(ctx, p)
    if not p.windowed and p.aggregate != "latest":
        dated = dated + [r for r, _ in undated]  # no time condition: an undated value counts too
        undated = []
    if not dated:
        return FactValue(None, (), tuple(undated))
    if p.aggregate == "latest":
        chosen = _latest(dated)
    else:
        pick = max if p.aggregate == "max" else min
        chosen = pick(dated, key=lambda r: r.number or 0.0)
    return FactValue(chosen.number, (chosen,), tuple(undated))


def quantity_drop_percent(ctx: Context, p: WindowParams) -> FactValue:
    """Percent fall from the highest earlier value to the latest value inside the window (weight loss)."""
    dated, _ = _numbers(ctx, p)
    found = _largest_fall(dated) if len(dated) >= 2 else None
    if found is None:
        return FactValue(None)
    top, latest = found
    assert top.number and latest.number is not None
    return FactValue(round(100.0 * (top.number - latest.number) / top.number, 2), (top, latest))


def medication(ctx: Context, p: MedicationParams) -> FactValue:
    """A medication "on board" (§4.2): active/on-hold, or completed/stopped at most N days ago.
    A stopped one whose end date is unknown does not count, and is returned as a near-miss to report."""
    hits: list[Record] = []
    unknown_end: list[tuple[Record, float | None]] = []
    for r in ctx.by_valueset.get(p.valueset, ()):
        if not r.resource_type.startswith("Medication"):
            continue
        if r.status is Status.current:
            hits.append(r)
        elif r.status is Status.ended:
            if r.end is None:
                unknown_end.append((r, None))
            elif r.end.days_before(ctx.today) <= p.ended_within_days:
                hits.append(r)
    return FactValue(bool(hits), tuple(hits), tuple(unknown_end))


def weakness_onset_days(ctx: Context, _p: NoParams) -> FactValue:
    """Days since the weakness began (latest possible day). Unknown onset counts as today (fail-safe)."""
    onset = ctx.weakness_onset
    if not ctx.weakness_evidence:
        return FactValue(None)  # no hip weakness: nothing to date
    if onset is None:
        return FactValue(0.0, (), (), ("weakness onset unknown: treated as new",))
    notes = ("weakness onset date unknown: treated as new",) if onset.text == "date unknown" else ()
    return FactValue(float(max(onset.days_before(ctx.today), 0)), ctx.weakness_evidence[:1], (), notes)


def weakness_bilateral(ctx: Context, _p: NoParams) -> FactValue:
    """Weakness documented on both sides (left and right records, or a bilateral one)."""
    sides = {r.laterality for r in ctx.weakness_evidence if r.laterality}
    bilateral = "bilateral" in sides or {"left", "right"} <= sides
    evidence = tuple(r for r in ctx.weakness_evidence if r.laterality) if bilateral else ()
    return FactValue(bilateral, evidence)


def age_years(ctx: Context, _p: NoParams) -> FactValue:
    """Age in whole years from Patient.birthDate; unknown when the Patient was not available."""
    if ctx.birth_date is None:
        return FactValue(None)
    born, today = ctx.birth_date, ctx.today
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return FactValue(float(years))


def rule(ctx: Context, p: RuleParams) -> FactValue:
    """Whether another rule (or any rule of a pathway) fired; rules are evaluated in dependency order."""
    targets = [
        rid
        for rid, pathway in ctx.pathway_of.items()
        if (p.rules and rid in p.rules) or (p.pathways and pathway in p.pathways)
    ]
    fired = [rid for rid in targets if ctx.fired.get(rid, False)]
    evidence = tuple(r for rid in fired for r in ctx.evidence_of.get(rid, ())) if p.with_evidence else ()
    return FactValue(bool(fired), evidence)


def draft_order(ctx: Context, p: DraftOrderParams) -> FactValue:
    """A draft ServiceRequest (order hooks' ``draftOrders``) whose code is in the value set."""
    hits = [
        r
        for r in ctx.by_valueset.get(p.valueset, ())
        if r.resource_type == "ServiceRequest"
        and (not p.selected_only or ctx.selections is None or r.ref() in ctx.selections)
    ]
    return FactValue(bool(hits), tuple(hits))


@dataclass(frozen=True)
class FactSpec:
    name: str
    func: Callable[[Context, Any], FactValue]
    params: type[Params]
    numeric: bool
    valueset_params: tuple[str, ...] = ("valueset",)
    #: The value is one of the evidence records' own numbers (a latest grade, a maximum temperature): the
    #: evidence keeps only the records whose number passes the rule's comparison, so that a normal MRC 5
    #: of the other leg is not shown, or counted (bilateral weakness), as weakness.
    value_of_a_record: bool = False

    @property
    def doc(self) -> str:
        return " ".join((self.func.__doc__ or "").split())


FACTS: dict[str, FactSpec] = {
    spec.name: spec
    for spec in (
        FactSpec("finding", finding, FindingParams, False, ("valueset", "severity", "not_severity")),
        FactSpec("coded_value", coded_value, CodedValueParams, False, ("valueset", "answers")),
        FactSpec("latest_score", latest_score, ScoreParams, True, value_of_a_record=True),
        FactSpec("score_decline", score_decline, ScoreParams, True),
        FactSpec("quantity", quantity, QuantityParams, True, value_of_a_record=True),
        FactSpec("quantity_drop_percent", quantity_drop_percent, WindowParams, True),
        FactSpec("medication", medication, MedicationParams, False),
        FactSpec("weakness_onset_days", weakness_onset_days, NoParams, True, ()),
        FactSpec("weakness_bilateral", weakness_bilateral, NoParams, False, ()),
        FactSpec("age_years", age_years, NoParams, True, ()),
        FactSpec("rule", rule, RuleParams, False, ()),
        FactSpec("draft_order", draft_order, DraftOrderParams, False),
    )
}


def vocabulary() -> dict[str, Any]:
    """The facts and operators rule files may use, with their parameters (for rule authors)."""
    return {
        "operators": sorted(OPERATORS),
        "facts": {
            name: {
                "kind": "number" if spec.numeric else "boolean",
                "description": spec.doc,
                "parameters": spec.params.model_json_schema().get("properties", {}),
            }
            for name, spec in FACTS.items()
        },
    }


if __name__ == "__main__":  # pragma: no cover - a convenience for rule authors
    import json

    print(json.dumps(vocabulary(), indent=2))  # noqa: T201
