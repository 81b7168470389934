"""The vocabulary rules are written in: named facts over normalised records, and comparison operators.

Each fact is a pure function ``(ctx, params) -> FactValue`` with a pydantic model for its parameters
(``engine.params``); rule files refer to facts by name (``fact: finding``) and ``engine.compile`` validates
every use at start-up. Thresholds and windows are parameters, so changing one is a data change.
``GET /rules/vocabulary`` and ``docs/rule-language.md`` list the vocabulary for rule authors. Numeric
facts over series of values live in ``engine.series``; the windows and fail-safe date rules in
``engine.context``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cds_service.engine.context import Context, FactValue, in_window, mentions, status_ok
from cds_service.engine.params import (
    CodedValueParams,
    DraftOrderParams,
    FindingParams,
    MedicationParams,
    NoParams,
    Params,
    QuantityParams,
    RuleParams,
    ScoreParams,
    WindowParams,
)
from cds_service.engine.records import Record, Status
from cds_service.engine.series import latest_score, quantity, quantity_drop_percent, score_decline

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def finding(ctx: Context, p: FindingParams) -> FactValue:
    """A current (or, for ``any-clinical``, resolved too) Condition or positive Observation in the value
    set, optionally within a time window and with a severity."""
    hits: list[Record] = []
    undated: list[tuple[Record, float | None]] = []
    for r in ctx.with_valuesets(p.valuesets):
        if r.resource_type not in p.resource_types or not status_ok(r, p.status) or not r.present:
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


_OBS = ("Observation",)
_MEDICATIONS = ("MedicationRequest", "MedicationStatement")


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
    #: The resource types whose ``code`` the ``valueset`` parameter is matched against (a fact with a
    #: ``resource_types`` parameter reads those instead). Prefetch queries are derived from this.
    reads: tuple[str, ...] = ()

    def reads_codes_of(self, params: Params) -> tuple[str, ...]:
        """Resource types this use of the fact reads by code (``valueset``), for prefetch derivation."""
        chosen = getattr(params, "resource_types", None)
        return tuple(chosen) if chosen is not None else self.reads

    @property
    def doc(self) -> str:
        return " ".join((self.func.__doc__ or "").split())


FACTS: dict[str, FactSpec] = {
    spec.name: spec
    for spec in (
        FactSpec("finding", finding, FindingParams, False, ("valueset", "severity", "not_severity")),
        FactSpec("coded_value", coded_value, CodedValueParams, False, ("valueset", "answers"), reads=_OBS),
        FactSpec("latest_score", latest_score, ScoreParams, True, value_of_a_record=True, reads=_OBS),
        FactSpec("score_decline", score_decline, ScoreParams, True, reads=_OBS),
        FactSpec("quantity", quantity, QuantityParams, True, value_of_a_record=True, reads=_OBS),
        FactSpec("quantity_drop_percent", quantity_drop_percent, WindowParams, True, reads=_OBS),
        FactSpec("medication", medication, MedicationParams, False, reads=_MEDICATIONS),
        FactSpec("weakness_onset_days", weakness_onset_days, NoParams, True, ()),
        FactSpec("weakness_bilateral", weakness_bilateral, NoParams, False, ()),
        FactSpec("age_years", age_years, NoParams, True, ()),
        FactSpec("rule", rule, RuleParams, False, ()),
        FactSpec("draft_order", draft_order, DraftOrderParams, False, reads=("ServiceRequest",)),
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
