"""Load and validate ``rules/`` once at start-up into an immutable ``RuleSet``.

Anything wrong in a rule file (unknown fact, operator, parameter, value set, category, code system,
a dependency cycle) raises ``RuleFileError`` naming the file and the field, and the service does not start.
Site-specific codes are merged from ``CDS_EXTRA_VALUESETS_DIR`` (files with ``extends: <value set id>``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cds_service.engine.evaluate import CompiledLeaf, CompiledNode, CompiledRule, Evaluation, evaluate
from cds_service.engine.facts import FACTS, OPERATORS
from cds_service.engine.model import (
    All,
    Any_,
    CategoriesFile,
    CategorySpec,
    CodeEntry,
    CodeSystemsFile,
    ExtraCodesFile,
    Leaf,
    Node,
    Not,
    PolicyFile,
    QuantitiesFile,
    RuleFile,
    ServicesFile,
    ServiceSpec,
    StatusFile,
    ValueSetFile,
    leaf_params,
)
from cds_service.engine.records import Normaliser, QuantityKind, StatusPolicy
from cds_service.engine.terminology import CodeSystem, Terminology, ValueSet, ValueSetEntry
from cds_service.orders import order_template

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster


class RuleFileError(Exception):
    """A rule or value-set file is invalid; the message names the file and the problem."""


class UnknownService(LookupError):
    """No CDS service with this id."""

    def __init__(self, service_id: str) -> None:
        super().__init__(service_id)
        self.service_id = service_id


@dataclass(frozen=True)
class RuleSet:
    """Everything loaded from ``rules/``: immutable, shared by all requests."""

    version: str  # content hash of all rule files: recorded with every evaluation
    terminology: Terminology
    normaliser: Normaliser
    rules: tuple[CompiledRule, ...]  # dependency order, entry rule first
    policy: PolicyFile
    categories: CategoriesFile
    services: ServicesFile
    red_flag_valuesets: frozenset[str]
    valueset_files: Mapping[str, ValueSetFile]
    order_templates: Mapping[str, dict[str, Any]]  # order id -> validated draft ServiceRequest

    def service(self, service_id: str) -> ServiceSpec:
        for spec in self.services.services:
            if spec.id == service_id:
                return spec
        raise UnknownService(service_id)

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def category(self, code: str) -> CategorySpec:
        return next(c for c in self.categories.categories if c.code == code)

    def evaluate(
        self,
        service: ServiceSpec,
        resources: Iterable[Mapping[str, Any]],
        patient_id: str | None,
        today: date,
        selections: frozenset[str] | None = None,
    ) -> Evaluation:
        """Normalise the patient's resources and run every rule: pure, ``today`` injected."""
        normalised = self.normaliser.normalise(resources, patient_id, today)
        return evaluate(
            self.rules,
            self.policy,
            normalised,
            today,
            self.red_flag_valuesets,
            service.emit_pathways,
            selections,
        )


def load_ruleset(rules_dir: Path, extra_valuesets_dir: Path | None = None) -> RuleSet:
    """Read, validate and compile every file. Raises ``RuleFileError`` on the first problem."""
    rules_dir = Path(rules_dir)
    digest = hashlib.sha256()
    systems_file = _load(rules_dir / "code-systems.yaml", CodeSystemsFile, digest)
    site_files = [
        (path, _load(path, ExtraCodesFile, digest))
        for path in (sorted(Path(extra_valuesets_dir).glob("*.yaml")) if extra_valuesets_dir else [])
    ]
    specs = dict(systems_file.systems)
    for path, site in site_files:
        for key, declared in site.systems.items():
            if key in specs and specs[key] != declared:
                raise RuleFileError(f"{path}: code system {key!r} is already declared differently")
            specs[key] = declared
    systems = {
        key: CodeSystem(
            key, s.uri, s.label, tuple(s.aliases), tuple(s.uri_prefixes), s.prefix_matching, s.normalise
        )
        for key, s in specs.items()
    }

    valueset_files: dict[str, ValueSetFile] = {}
    sources: dict[str, Path] = {}
    for path in sorted((rules_dir / "valuesets").glob("*.yaml")):
        vs = _load(path, ValueSetFile, digest)
        if vs.id in valueset_files:
            raise RuleFileError(f"{path}: value set id {vs.id!r} also defined in {sources[vs.id]}")
        valueset_files[vs.id] = vs
        sources[vs.id] = path
    extra: dict[str, list[CodeEntry]] = {}
    for path, site in site_files:
        if site.extends not in valueset_files:
            raise RuleFileError(f"{path}: extends unknown value set {site.extends!r}")
        extra.setdefault(site.extends, []).extend(site.codes)
        logger.info("site codes: %d added to value set %s from %s", len(site.codes), site.extends, path.name)

    quantities = _load(rules_dir / "quantities.yaml", QuantitiesFile, digest)
    kinds = {
        name: QuantityKind(
            id=name,
            canonical_unit=k.canonical_unit,
            display_unit=k.display_unit,
            units={u: (spec.factor, spec.offset) for u, spec in k.units.items()},
            plausible=k.plausible,
            unitless_ok=k.unitless_ok,
            integers_only=k.integers_only,
            coded_values={
                (_system_uri(systems, cv.system, f"quantities.yaml {name}"), cv.code): cv.value
                for cv in k.coded_values
            },
        )
        for name, k in quantities.kinds.items()
    }

    valuesets: dict[str, ValueSet] = {}
    for vs_id, vs in valueset_files.items():
        where = str(sources[vs_id])
        if vs.value_kind is not None and vs.value_kind not in kinds:
            raise RuleFileError(f"{where}: value_kind {vs.value_kind!r} is not in quantities.yaml")
        entries = tuple(_entry(systems, e, where) for e in [*vs.codes, *extra.get(vs_id, [])])
        valuesets[vs_id] = ValueSet(
            vs.id,
            vs.version,
            vs.title,
            entries,
            vs.value_kind,
            vs.description,
            tuple(vs.sources),
            tuple(vs.not_at_sites),
        )
    terminology = Terminology(systems, valuesets)

    status = _load(rules_dir / "status.yaml", StatusFile, digest)
    for name in (status.laterality_valueset, status.negative_answer_valueset):
        if name not in valuesets:
            raise RuleFileError(f"status.yaml: value set {name!r} does not exist")
    policy_status = StatusPolicy(
        current={t: frozenset(s.current) for t, s in status.resources.items()},
        inactive={t: frozenset(s.inactive) for t, s in status.resources.items()},
        ended={t: frozenset(s.ended) for t, s in status.resources.items()},
        excluded={t: frozenset(s.excluded) for t, s in status.resources.items()},
        verification_excluded=frozenset(status.condition_verification_excluded),
        negative_text=tuple(status.answer_text.negative),
        positive_text=tuple(status.answer_text.positive),
    )
    normaliser = Normaliser(
        terminology, policy_status, kinds, status.laterality_valueset, status.negative_answer_valueset
    )

    categories = _load(rules_dir / "categories.yaml", CategoriesFile, digest)
    if len({c.code for c in categories.categories}) != 6:
        raise RuleFileError("categories.yaml: each of the six categories must appear exactly once")
    for c in categories.categories:
        _check_order_codes(systems, c.order.codes, f"categories.yaml {c.code}")
    policy = _load(rules_dir / "policy.yaml", PolicyFile, digest)
    services = _load(rules_dir / "services.yaml", ServicesFile, digest)

    rule_files: dict[str, tuple[RuleFile, Path]] = {}
    for path in sorted((rules_dir / "pathways").rglob("*.yaml")):
        spec = _load(path, RuleFile, digest)
        if spec.id in rule_files:
            raise RuleFileError(f"{path}: rule id {spec.id!r} also defined in {rule_files[spec.id][1]}")
        rule_files[spec.id] = (spec, path)
    if policy.entry_rule not in rule_files:
        raise RuleFileError(f"policy.yaml: entry_rule {policy.entry_rule!r} is not a rule")
    compiled = {rid: _compile(spec, path, valuesets, rule_files) for rid, (spec, path) in rule_files.items()}
    ordered = _dependency_order(compiled, policy.entry_rule)
    red_flag_vs = frozenset(
        vs for r in ordered if r.spec.pathway == policy.red_flag_pathway for vs in r.valuesets
    )
    order_templates = _order_templates(categories, ordered, systems)
    for service in services.services:
        for key in service.required_prefetch:
            if key not in service.prefetch:
                raise RuleFileError(f"services.yaml {service.id}: required_prefetch {key!r} has no template")
    return RuleSet(
        version=digest.hexdigest()[:12],
        terminology=terminology,
        normaliser=normaliser,
        rules=tuple(ordered),
        policy=policy,
        categories=categories,
        services=services,
        red_flag_valuesets=red_flag_vs,
        valueset_files=valueset_files,
        order_templates=order_templates,
    )


# -- helpers ---------------------------------------------------------------------------------------------


def _load(path: Path, model: type[M], digest: Any) -> M:
    try:
        raw_bytes = path.read_bytes()
        data = yaml.load(raw_bytes, Loader=_YAML_LOADER)
    except FileNotFoundError as exc:
        raise RuleFileError(f"{path}: file is missing") from exc
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path}: not valid YAML: {exc}") from exc
    digest.update(path.name.encode() + b"\0" + raw_bytes)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RuleFileError(f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s))") from exc


def _order_templates(
    categories: CategoriesFile, rules: Sequence[CompiledRule], systems: Mapping[str, CodeSystem]
) -> dict[str, dict[str, Any]]:
    """Every order any card can suggest, as a ServiceRequest validated with fhir.resources R4B."""
    templates: dict[str, dict[str, Any]] = {}
    specs = [(f"categories.yaml {c.code}", c.order) for c in categories.categories]
    specs += [(f"rule {r.id}", order) for r in rules for order in r.spec.orders]
    for where, order in specs:
        try:
            template = order_template(order, systems)
        except ValidationError as exc:
            raise RuleFileError(
                f"{where}: order {order.id} is not a valid ServiceRequest: {exc.errors()[0]}"
            ) from exc
        if templates.setdefault(order.id, template) != template:
            raise RuleFileError(f"{where}: order id {order.id!r} is used for two different orders")
    return templates


def _system_uri(systems: Mapping[str, CodeSystem], name: str, where: str) -> str:
    if name in systems:
        return systems[name].uri
    for system in systems.values():
        if name == system.uri:
            return system.uri
    raise RuleFileError(f"{where}: unknown code system {name!r} (declare it in code-systems.yaml)")


def _entry(systems: Mapping[str, CodeSystem], e: CodeEntry, where: str) -> ValueSetEntry:
    uri = _system_uri(systems, e.system, where)
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


def _check_order_codes(systems: Mapping[str, CodeSystem], codes: Sequence[Any], where: str) -> None:
    for code in codes:
        _system_uri(systems, code.system, where)


def _compile(
    spec: RuleFile, path: Path, valuesets: Mapping[str, ValueSet], rules: Mapping[str, tuple[RuleFile, Path]]
) -> CompiledRule:
    used_vs: set[str] = set()
    depends: set[str] = set()
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
        return CompiledLeaf(label, fact, params, raw, leaf.op, compare, leaf.value)

    node = compile_node(spec.when, "when")
    depends.discard(spec.id)
    return CompiledRule(spec, node, frozenset(depends), frozenset(used_vs))


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
