"""Compile validated rule files into an ``Engine``: terminology, the normaliser, and every rule's
condition tree resolved to fact functions, parameters and comparison operators, in dependency order.

Everything a rule file can get wrong that the file shapes alone cannot catch (an unknown fact, operator,
parameter or value set, a numeric fact without a threshold, a dependency cycle) raises ``RuleFileError``
naming the file and the field: the service does not start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cds_service.engine.code_files import CodeEntry, CodeSystemSpec, QuantitiesFile, StatusFile, ValueSetFile
from cds_service.engine.engine import Engine
from cds_service.engine.evaluate import CompiledLeaf, CompiledNode, CompiledRule, with_empty_outcome
from cds_service.engine.facts import FACTS, OPERATORS
from cds_service.engine.model import (
    All,
    Any_,
    Leaf,
    Node,
    Not,
    PolicyFile,
    RuleFile,
    RuleFileError,
    leaf_params,
)
from cds_service.engine.normalise import Normaliser
from cds_service.engine.records import QuantityKind, StatusPolicy
from cds_service.engine.terminology import CodeSystem, Terminology, ValueSet, ValueSetEntry


def build_engine(
    *,
    systems: Mapping[str, CodeSystemSpec],
    valuesets: Mapping[str, ValueSetFile],
    sources: Mapping[str, Path],
    site_codes: Mapping[str, Sequence[CodeEntry]],
    quantities: QuantitiesFile,
    status: StatusFile,
    policy: PolicyFile,
    rules: Mapping[str, tuple[RuleFile, Path]],
) -> Engine:
    """The engine for these files. ``site_codes``: value set id -> codes a site added
    (``CDS_EXTRA_VALUESETS_DIR``); ``sources``: value set id -> its file, for messages."""
    code_systems = code_systems_of(systems)
    kinds = _quantity_kinds(quantities, code_systems)
    compiled_sets: dict[str, ValueSet] = {}
    for vs_id, vs in valuesets.items():
        where = str(sources.get(vs_id, vs_id))
        if vs.value_kind is not None and vs.value_kind not in kinds:
            raise RuleFileError(f"{where}: value_kind {vs.value_kind!r} is not in quantities.yaml")
        entries = tuple(_entry(code_systems, e, where) for e in [*vs.codes, *site_codes.get(vs_id, [])])
        compiled_sets[vs_id] = ValueSet(
            vs.id,
            vs.version,
            vs.title,
            entries,
            vs.value_kind,
            vs.description,
            tuple(vs.sources),
            tuple(vs.not_at_sites),
        )
    terminology = Terminology(code_systems, compiled_sets)
    for name in (status.laterality_valueset, status.negative_answer_valueset):
        if name not in compiled_sets:
            raise RuleFileError(f"status.yaml: value set {name!r} does not exist")
    normaliser = Normaliser(
        terminology,
        _status_policy(status),
        kinds,
        status.laterality_valueset,
        status.negative_answer_valueset,
    )
    if policy.entry_rule not in rules:
        raise RuleFileError(f"policy.yaml: entry_rule {policy.entry_rule!r} is not a rule")
    compiled = {rid: _compile_rule(spec, path, compiled_sets, rules) for rid, (spec, path) in rules.items()}
    ordered = _dependency_order(compiled, policy.entry_rule)
    red_flag_vs = frozenset(
        vs for r in ordered if r.spec.pathway == policy.red_flag_pathway for vs in r.valuesets
    )
    return Engine(terminology, normaliser, tuple(ordered), policy, red_flag_vs)


def code_systems_of(systems: Mapping[str, CodeSystemSpec]) -> dict[str, CodeSystem]:
    return {
        key: CodeSystem(
            key, s.uri, s.label, tuple(s.aliases), tuple(s.uri_prefixes), s.prefix_matching, s.normalise
        )
        for key, s in systems.items()
    }


def _quantity_kinds(quantities: QuantitiesFile, systems: Mapping[str, CodeSystem]) -> dict[str, QuantityKind]:
    return {
        name: QuantityKind(
            id=name,
            canonical_unit=k.canonical_unit,
            display_unit=k.display_unit,
            units={u: (spec.factor, spec.offset) for u, spec in k.units.items()},
            plausible=k.plausible,
            unitless_ok=k.unitless_ok,
            integers_only=k.integers_only,
            coded_values={
                (system_uri(systems, cv.system, f"quantities.yaml {name}"), cv.code): cv.value
                for cv in k.coded_values
            },
        )
        for name, k in quantities.kinds.items()
    }


def _status_policy(status: StatusFile) -> StatusPolicy:
    return StatusPolicy(
        current={t: frozenset(s.current) for t, s in status.resources.items()},
        inactive={t: frozenset(s.inactive) for t, s in status.resources.items()},
        ended={t: frozenset(s.ended) for t, s in status.resources.items()},
        excluded={t: frozenset(s.excluded) for t, s in status.resources.items()},
        verification_excluded=frozenset(status.condition_verification_excluded),
        negative_text=tuple(status.answer_text.negative),
        positive_text=tuple(status.answer_text.positive),
    )


def system_uri(systems: Mapping[str, CodeSystem], name: str, where: str) -> str:
    if name in systems:
        return systems[name].uri
    for system in systems.values():
        if name == system.uri:
            return system.uri
    raise RuleFileError(f"{where}: unknown code system {name!r} (declare it in code-systems.yaml)")


def _entry(systems: Mapping[str, CodeSystem], e: CodeEntry, where: str) -> ValueSetEntry:
    uri = system_uri(systems, e.system, where)
    system = next(s for s in systems.values() if s.uri == uri)
    if (e.code is None) == (e.prefix is None):
        raise RuleFileError(
            f"{where}: each code entry has exactly one of code or prefix ({e.code or e.prefix})"
        )
    if e.prefix is not None and not system.prefix_matching:
        raise RuleFileError(
            f"{where}: prefix {e.prefix!r} not allowed for {e.system} (no hierarchy in codes)"
        )
    raw = e.code if e.code is not None else e.prefix
    assert raw is not None
    norm = system.normalise_code(raw)
    return ValueSetEntry(
        system=uri,
        code=norm if e.code is not None else None,
        prefix=norm if e.prefix is not None else None,
        seventh=frozenset(e.seventh) if e.seventh else None,
        exclude=e.exclude,
        laterality=e.laterality,
        display=e.display,
        source_code=raw,
    )


def _compile_rule(
    spec: RuleFile, path: Path, valuesets: Mapping[str, ValueSet], rules: Mapping[str, tuple[RuleFile, Path]]
) -> CompiledRule:
    used_vs: set[str] = set()
    depends: set[str] = set()
    reads_codes: dict[str, set[str]] = {}
    for order in spec.orders:
        if not order.codes:
            raise RuleFileError(f"{path}: order {order.id} has no code")

    def compile_node(node: Node, where: str) -> CompiledNode:
        if isinstance(node, All):
            return CompiledNode(
                "all", tuple(compile_node(c, f"{where}.all") for c in node.all), label=node.label
            )
        if isinstance(node, Any_):
            return CompiledNode(
                "any", tuple(compile_node(c, f"{where}.any") for c in node.any), label=node.label
            )
        if isinstance(node, Not):
            return CompiledNode("not", (compile_node(node.not_, f"{where}.not"),), label=node.label)
        assert isinstance(node, Leaf)
        return CompiledNode("leaf", leaf=compile_leaf(node, where))

    def compile_leaf(leaf: Leaf, where: str) -> CompiledLeaf:
        fact = FACTS.get(leaf.fact)
        if fact is None:
            raise RuleFileError(
                f"{path}: {where}: unknown fact {leaf.fact!r} (known: {', '.join(sorted(FACTS))})"
            )
        raw = leaf_params(leaf)
        try:
            params = fact.params.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise RuleFileError(f"{path}: {where}: fact {leaf.fact}: {loc}: {first['msg']}") from exc
        for name in fact.valueset_params:
            value = getattr(params, name, None)
            for vs in [value] if isinstance(value, str) else (value or []):
                if vs not in valuesets:
                    raise RuleFileError(f"{path}: {where}: fact {leaf.fact}: unknown value set {vs!r}")
                used_vs.add(vs)
        coded = getattr(params, "valueset", None)
        names = [coded] if isinstance(coded, str) else list(coded or [])
        for resource_type in fact.reads_codes_of(params):
            reads_codes.setdefault(resource_type, set()).update(names)
        if leaf.fact == "rule":
            for dep in raw.get("rules") or []:
                if dep not in rules:
                    raise RuleFileError(f"{path}: {where}: rule {dep!r} does not exist")
                depends.add(dep)
            for pathway in raw.get("pathways") or []:
                depends.update(rid for rid, (r, _) in rules.items() if r.pathway == pathway)
        compare = None
        if fact.numeric:
            if (
                leaf.op is None
                or leaf.op not in OPERATORS
                or leaf.value is None
                or isinstance(leaf.value, bool)
            ):
                raise RuleFileError(
                    f"{path}: {where}: numeric fact {leaf.fact} needs op ({sorted(OPERATORS)}) and a number"
                )
            compare = OPERATORS[leaf.op]
        elif leaf.op is not None:
            raise RuleFileError(f"{path}: {where}: boolean fact {leaf.fact} takes no op")
        label = leaf.label or _default_label(leaf.fact, raw, leaf.op, leaf.value)
        record_based = frozenset(names) if fact.reads_codes_of(params) else frozenset()
        compiled = CompiledLeaf(label, fact, params, raw, leaf.op, compare, leaf.value, record_based)
        return with_empty_outcome(compiled)

    node = compile_node(spec.when, "when")
    depends.discard(spec.id)
    return CompiledRule(
        spec,
        node,
        frozenset(depends),
        frozenset(used_vs),
        {t: frozenset(v) for t, v in reads_codes.items()},
    )


def _default_label(fact: str, raw: Mapping[str, Any], op: str | None, value: object) -> str:
    subject = raw.get("valueset") or raw.get("rules") or raw.get("pathways") or fact
    text = f"{fact}({subject})"
    return f"{text} {op} {value:g}" if op is not None and isinstance(value, int | float) else text


def _dependency_order(compiled: Mapping[str, CompiledRule], entry: str) -> list[CompiledRule]:
    ordered: list[CompiledRule] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(rid: str, chain: list[str]) -> None:
        if state.get(rid) == 2:
            return
        if state.get(rid) == 1:
            raise RuleFileError(f"rule dependency cycle: {' -> '.join([*chain, rid])}")
        state[rid] = 1
        for dep in sorted(compiled[rid].depends_on):
            visit(dep, [*chain, rid])
        state[rid] = 2
        ordered.append(compiled[rid])

    visit(entry, [])
    for rid in sorted(compiled):
        visit(rid, [])
    return ordered
