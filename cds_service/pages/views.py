"""What each page shows, built from the catalog: plain data the templates only lay out.

The rule's logic is its ``when`` tree read aloud: "all of", "any of", "none of", and each criterion with
its label, its window in words and links to the value sets it reads, so a clinician can follow the rule
without knowing the rule-file format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cds_service.catalog import Catalog
from cds_service.engine.evaluate import CompiledRule
from cds_service.engine.facts import FACTS
from cds_service.engine.model import All, Any_, Leaf, Node, leaf_params, node_children
from cds_service.pages.examples import ExamplePatient

PATHWAY_NAMES = {
    "entry": "Entry criterion (hip weakness)",
    "red-flag": "Red flags",
    "neurological": "Neurological causes",
    "hip": "Hip joint causes",
    "muscular": "Muscular causes",
    "default": "No cause documented",
    "order": "Order checks (order-select, order-sign)",
}


@dataclass(frozen=True)
class Criterion:
    """One node of the logic: a group ("All of") with children, or a leaf with its details."""

    text: str
    details: tuple[str, ...] = ()
    valuesets: tuple[tuple[str, str], ...] = ()  # (id, title)
    children: tuple[Criterion, ...] = ()


@dataclass(frozen=True)
class RuleStatsView:
    fired: int
    cards: int
    accepted: int
    overridden: int
    reasons: tuple[tuple[str, int], ...]  # (display or code, cards)


@dataclass(frozen=True)
class RulePage:
    rule: CompiledRule
    pathway_name: str
    logic: Criterion
    categories: tuple[tuple[str, str, str], ...]  # (code, display, indicator)
    examples: tuple[ExamplePatient, ...]
    valuesets: tuple[tuple[str, str], ...]
    rules_version: str
    stats: RuleStatsView | None = None
    stats_note: str | None = None  # why there are none (no token sent, store unavailable)
    orders: tuple[str, ...] = field(default=())


def rule_page(
    catalog: Catalog,
    rule: CompiledRule,
    examples: Sequence[ExamplePatient],
    stats: Mapping[str, Any] | None,
    stats_note: str | None,
) -> RulePage:
    spec = rule.spec
    titles = {v.id: v.title for v in catalog.valueset_files.values()}
    return RulePage(
        rule=rule,
        pathway_name=PATHWAY_NAMES.get(spec.pathway, spec.pathway),
        logic=criterion(spec.when, titles),
        categories=tuple(
            (c, catalog.category(c).display, spec.indicator or catalog.category(c).indicator)
            for c in spec.recommends
        ),
        examples=tuple(examples),
        valuesets=tuple((v, titles.get(v, v)) for v in sorted(rule.valuesets)),
        rules_version=catalog.version,
        stats=_stats(stats) if stats is not None else None,
        stats_note=stats_note,
        orders=tuple(o.label for o in spec.orders),
    )


def index_page(catalog: Catalog) -> list[tuple[str, list[CompiledRule]]]:
    """Every rule, grouped by pathway in the order a clinician meets them."""
    groups: dict[str, list[CompiledRule]] = {name: [] for name in PATHWAY_NAMES}
    for rule in catalog.rules:
        groups.setdefault(rule.spec.pathway, []).append(rule)
    return [
        (PATHWAY_NAMES.get(p, p), sorted(rules, key=lambda r: r.id)) for p, rules in groups.items() if rules
    ]


def criterion(node: Node, titles: Mapping[str, str]) -> Criterion:
    if isinstance(node, Leaf):
        return _leaf(node, titles)
    heading = (
        "All of these"
        if isinstance(node, All)
        else "Any of these"
        if isinstance(node, Any_)
        else "None of these"
    )
    label = node.label
    children = tuple(criterion(child, titles) for child in node_children(node))
    return Criterion(f"{label}: {heading.lower()}" if label else heading, children=children)


def _leaf(leaf: Leaf, titles: Mapping[str, str]) -> Criterion:
    params = leaf_params(leaf)
    spec = FACTS.get(leaf.fact)
    valueset_keys = spec.valueset_params if spec is not None else ("valueset",)
    valuesets: list[str] = []
    details: list[str] = []
    for key, value in params.items():
        if key in valueset_keys:
            valuesets += [value] if isinstance(value, str) else [str(v) for v in value]
        elif (text := _detail(key, value)) is not None:
            details.append(text)
    if leaf.op is not None:
        threshold = f"{leaf.value:g}" if isinstance(leaf.value, float) else str(leaf.value)
        details.insert(0, f"value {leaf.op} {threshold}")
    text = leaf.label or (spec.doc if spec is not None else leaf.fact)
    return Criterion(text, tuple(details), tuple((v, titles.get(v, v)) for v in valuesets))


_FLAGS = {
    "bilateral": "on both sides",
    "or_recorded": "or recorded within the window",
    "with_evidence": "its findings are shown on the card",
    "per_side": "each leg on its own",
    "selected_only": "order-select: only newly selected orders",
}


def _detail(key: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return _FLAGS.get(key, key.replace("_", " ")) if value else None
    if key == "combine":
        return "either window is enough" if value == "any" else None
    if key == "within_days":
        return f"within the last {value} days"
    if key == "relative_to_weakness" and isinstance(value, Mapping):
        parts = [f"from {value['from_days']} days" if value.get("from_days") is not None else ""]
        parts.append(f"to {value['to_days']} days" if value.get("to_days") is not None else "")
        return "relative to the weakness onset: " + " ".join(p for p in parts if p)
    if key in ("rules", "pathways") and isinstance(value, list):
        return f"{key}: {', '.join(map(str, value))}"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"{key.replace('_', ' ')}: {text}"


def _stats(rule: Mapping[str, Any]) -> RuleStatsView:
    reasons = tuple(
        (str(r.get("display") or r.get("code") or "unspecified"), int(r.get("cards", 0)))
        for r in rule.get("override_reasons", [])
    )
    return RuleStatsView(
        fired=int(rule.get("fired", 0)),
        cards=int(rule.get("cards", 0)),
        accepted=int(rule.get("accepted", 0)),
        overridden=int(rule.get("overridden", 0)),
        reasons=reasons,
    )
