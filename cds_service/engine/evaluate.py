"""Evaluate a rule set over one patient's records: pure, ``today`` injected, no I/O.

Order of work:
1. the entry rule (hip weakness, knowledge §4.1) - its evidence fixes the weakness onset;
2. every other rule in dependency order (a rule may test whether another fired);
3. the policy: rules of gated pathways count only with hip weakness (§5.5); categories are collected per
   rule and suppressed where the policy says so (no physiotherapy next to a red flag, §1/§5.6).
Everything is traced: each leaf with its result and the records behind it, so a reviewer can see why a
card was (or was not) shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from cds_service.engine.context import Context, FactValue
from cds_service.engine.dates import FhirDate
from cds_service.engine.facts import FactSpec
from cds_service.engine.model import All, Any_, Not, PolicyFile, RuleFile
from cds_service.engine.params import Params
from cds_service.engine.records import Normalised, Record, Unreadable


@dataclass(frozen=True)
class CompiledLeaf:
    label: str
    spec: FactSpec
    params: Params
    raw_params: Mapping[str, Any]
    op: str | None
    compare: Callable[[float, float], bool] | None
    threshold: float | bool | None
    #: For a fact that reads only the records of its value sets: those value sets, and the leaf's outcome
    #: when none of them holds a record (computed once by ``with_empty_outcome``; most leaves of a call).
    record_valuesets: frozenset[str] = frozenset()
    empty: tuple[bool, LeafTrace] | None = None


@dataclass(frozen=True)
class CompiledNode:
    kind: str  # all | any | not | leaf
    children: tuple[CompiledNode, ...] = ()
    leaf: CompiledLeaf | None = None
    label: str | None = None


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleFile
    when: CompiledNode
    depends_on: frozenset[str]
    valuesets: frozenset[str]
    reads_codes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # resource type -> value sets

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class LeafTrace:
    label: str
    fact: str
    params: Mapping[str, Any]
    passed: bool
    value: float | bool | None
    evidence: tuple[Record, ...]


@dataclass(frozen=True)
class DataNote:
    """Something the clinician must know because data could not be used; ``red_flag``: it could hide one."""

    text: str
    ref: str
    red_flag: bool


@dataclass(frozen=True)
class RuleResult:
    rule: CompiledRule
    matched: bool  # the rule's condition is true
    fired: bool  # matched and allowed by the entry gate
    evidence: tuple[Record, ...]
    leaves: tuple[LeafTrace, ...]


@dataclass(frozen=True)
class Evaluation:
    today: date
    hip_weakness: bool
    weakness_onset: FhirDate | None
    red_flag: bool
    results: tuple[RuleResult, ...]
    categories: Mapping[str, tuple[RuleResult, ...]]  # emitted, in policy order (category code -> rules)
    suppressed: tuple[tuple[str, str], ...]  # (category, reason)
    notes: tuple[DataNote, ...]
    unreadable: tuple[Unreadable, ...]
    other_patient_resources: int = 0

    def fired(self) -> list[RuleResult]:
        return [r for r in self.results if r.fired]


@dataclass
class _Walk:
    leaves: list[LeafTrace] = field(default_factory=list)
    notes: list[DataNote] = field(default_factory=list)


def evaluate(
    rules: Sequence[CompiledRule],
    policy: PolicyFile,
    normalised: Normalised,
    today: date,
    red_flag_valuesets: frozenset[str],
    emit_pathways: Iterable[str],
    selections: frozenset[str] | None = None,
) -> Evaluation:
    """Run ``rules`` (already in dependency order, entry rule first) over the normalised records."""
    by_vs: dict[str, list[Record]] = {}
    for record in normalised.records:
        for vs in record.valuesets:
            by_vs.setdefault(vs, []).append(record)
    ctx = Context(
        today=today,
        records=normalised.records,
        by_valueset=by_vs,
        birth_date=normalised.birth_date,
        pathway_of={r.id: r.spec.pathway for r in rules},
        selections=selections,
    )
    gated = set(policy.gated_pathways)
    results: list[RuleResult] = []
    notes: list[DataNote] = []
    hip_weakness = False
    for compiled in rules:
        walk = _Walk()
        matched, evidence = _eval(compiled.when, ctx, walk, compiled.spec.pathway == policy.red_flag_pathway)
        is_entry = compiled.id == policy.entry_rule
        fired = matched and (is_entry or compiled.spec.pathway not in gated or hip_weakness)
        if is_entry:
            hip_weakness = matched
            if matched:
                ctx.set_weakness(evidence)
        ctx.fired[compiled.id] = fired
        if fired:
            ctx.evidence_of[compiled.id] = evidence
        if fired or is_entry or compiled.spec.pathway == policy.red_flag_pathway:
            notes.extend(walk.notes)
        results.append(RuleResult(compiled, matched, fired, evidence, tuple(walk.leaves)))

    emit = set(emit_pathways)
    red_flag = any(r.fired and r.rule.spec.pathway == policy.red_flag_pathway for r in results)
    collected: dict[str, list[RuleResult]] = {}
    for result in results:
        if result.fired and result.rule.spec.pathway in emit:
            for category in result.rule.spec.recommends:
                collected.setdefault(category, []).append(result)
    suppressed: list[tuple[str, str]] = []
    fired_pathways = {r.rule.spec.pathway for r in results if r.fired}
    for rule_ in policy.suppress:
        if rule_.category in collected and rule_.when_pathway_fired in fired_pathways:
            del collected[rule_.category]
            suppressed.append((rule_.category, rule_.reason))
    categories: dict[str, tuple[RuleResult, ...]] = {
        c: tuple(collected[c]) for c in policy.category_order if c in collected
    }

    for u in normalised.unreadable:
        hides = u.code_unknown or bool(u.valuesets & red_flag_valuesets)
        notes.append(DataNote(f"{u.display or u.resource_type}: {u.problem}", u.ref(), hides))
    return Evaluation(
        today=today,
        hip_weakness=hip_weakness,
        weakness_onset=ctx.weakness_onset,
        red_flag=red_flag,
        results=tuple(results),
        categories=categories,
        suppressed=tuple(suppressed),
        notes=tuple(_dedupe(notes)),
        unreadable=tuple(normalised.unreadable),
        other_patient_resources=normalised.other_patient,
    )


def _eval(
    node: CompiledNode, ctx: Context, walk: _Walk, red_flag_rule: bool
) -> tuple[bool, tuple[Record, ...]]:
    if node.kind == "leaf":
        assert node.leaf is not None
        return _eval_leaf(node.leaf, ctx, walk, red_flag_rule)
    if node.kind == "not":
        inner, _ = _eval(node.children[0], ctx, walk, red_flag_rule)
        return (not inner), ()
    outcomes = [_eval(child, ctx, walk, red_flag_rule) for child in node.children]
    if node.kind == "all":
        ok = all(o for o, _ in outcomes)
        return ok, _union(e for _, e in outcomes) if ok else ()
    ok = any(o for o, _ in outcomes)
    return ok, _union(e for o, e in outcomes if o)


def _eval_leaf(
    leaf: CompiledLeaf, ctx: Context, walk: _Walk, red_flag_rule: bool
) -> tuple[bool, tuple[Record, ...]]:
    if leaf.empty is not None and ctx.by_valueset.keys().isdisjoint(leaf.record_valuesets):
        passed, trace = leaf.empty  # no record in its value sets: the outcome is known in advance
        walk.leaves.append(trace)
        return passed, ()
    result: FactValue = leaf.spec.func(ctx, leaf.params)
    passed, evidence, near = _outcome(leaf, result)
    walk.leaves.append(LeafTrace(leaf.label, leaf.spec.name, leaf.raw_params, passed, result.value, evidence))
    for record in near:
        walk.notes.append(DataNote(_near_miss_text(record, leaf.label), record.ref(), red_flag_rule))
    for note in result.notes:
        walk.notes.append(DataNote(note, "", red_flag_rule))
    return passed, evidence


def with_empty_outcome(leaf: CompiledLeaf) -> CompiledLeaf:
    """The leaf with its outcome over no records, when its fact reads only its value sets' records (a
    finding, a score, a quantity, a medication, a draft order): the same answer ``_eval_leaf`` would give,
    computed once at start-up instead of on every call. Other facts are returned unchanged."""
    if not leaf.record_valuesets:
        return leaf
    result = leaf.spec.func(Context(today=date.min, records=(), by_valueset={}), leaf.params)
    passed, evidence, near = _outcome(leaf, result)
    if evidence or near or result.notes:
        return leaf  # not a constant outcome: evaluated on every call
    trace = LeafTrace(leaf.label, leaf.spec.name, leaf.raw_params, passed, result.value, ())
    return replace(leaf, empty=(passed, trace))


def _outcome(leaf: CompiledLeaf, result: FactValue) -> tuple[bool, tuple[Record, ...], list[Record]]:
    """Whether the leaf passed, the evidence it keeps, and the undated records that nearly counted."""
    if leaf.compare is not None:
        value = result.value
        passed = (
            value is not None
            and not isinstance(value, bool)
            and leaf.threshold is not None
            and leaf.compare(float(value), float(leaf.threshold))
        )
        near = [r for r, v in result.undated if v is not None and leaf.compare(v, float(leaf.threshold or 0))]
    else:
        passed = bool(result.value) if leaf.threshold is None else bool(result.value) == bool(leaf.threshold)
        near = [r for r, _ in result.undated]
    evidence = result.evidence if passed else ()
    if passed and leaf.spec.value_of_a_record and leaf.compare is not None:
        threshold = float(leaf.threshold or 0)
        evidence = tuple(r for r in evidence if r.number is None or leaf.compare(r.number, threshold))
    return passed, evidence, near


def _near_miss_text(record: Record, label: str) -> str:
    """An undated (or end-unknown) record that would otherwise have counted for ``label``."""
    what = f"{record.display} {record.value_text or ''}".strip()
    why = "no date" if record.date is None else "end date unknown"
    return f"{what} ({record.resource_type}, {why}): not counted for \u201c{label}\u201d; please verify"


def _union(groups: Iterable[tuple[Record, ...]]) -> tuple[Record, ...]:
    seen: dict[int, Record] = {}
    for group in groups:
        for record in group:
            seen.setdefault(id(record), record)
    return tuple(seen.values())


def _dedupe(notes: Iterable[DataNote]) -> list[DataNote]:
    seen: dict[tuple[str, str], DataNote] = {}
    for n in notes:
        key = (n.text, n.ref)
        if key not in seen or (n.red_flag and not seen[key].red_flag):
            seen[key] = n
    return list(seen.values())


__all__ = ["All", "Any_", "CompiledLeaf", "CompiledNode", "CompiledRule", "Evaluation", "Not", "evaluate"]
