"""One PlanDefinition (type ``eca-rule``) per CDS service, following HL7's CDS Hooks service PlanDefinition
profile where it applies: the ``cqf-cdsHooksEndpoint`` extension names the service's endpoint, every
action is triggered by the service's hook, and the prefetch templates ride on the actions' inputs.

Which rules a service's plan holds (``members``), in the engine's evaluation order:

- the entry rule (``policy.entry_rule``, role ``entry``): it gates every other rule;
- every rule whose pathway the service emits cards for (``emit_pathways``, role ``card``);
- every rule those depend on, directly or not (role ``input``): the order services' lumbar-MRI check
  asks whether any red-flag, neurological or unexplained-weakness rule fired, and the last of these asks
  about the hip and muscular rules, so those are evaluated for that service although it shows no card
  for them.

The engine evaluates all rules on every call; a rule outside this set cannot change the service's
answer, so it is not part of its plan.
"""

from __future__ import annotations

from typing import Any

from cds_service.artefacts.actions import Role, rule_action
from cds_service.artefacts.common import (
    CDS_HOOKS_ENDPOINT,
    CDS_HOOKS_PROFILE,
    PUBLISHER,
    Links,
    canonical,
    computable_name,
)
from cds_service.artefacts.inputs import query_patterns
from cds_service.catalog import Catalog
from cds_service.definitions import Service

PLAN_TYPE = "http://terminology.hl7.org/CodeSystem/plan-definition-type"


def members(catalog: Catalog, service: Service) -> list[tuple[str, Role]]:
    """(rule id, role) for every rule in the service's plan, in evaluation (dependency) order."""
    entry = catalog.policy.entry_rule
    emitted = {r.id for r in catalog.rules if r.spec.pathway in service.emit_pathways}
    wanted = {entry, *emitted}
    pending = list(wanted)
    while pending:
        compiled = catalog.rule(pending.pop())
        for dep in compiled.depends_on if compiled else ():
            if dep not in wanted:
                wanted.add(dep)
                pending.append(dep)
    roles: dict[str, Role] = {rid: "card" if rid in emitted else "input" for rid in wanted}
    roles[entry] = "entry"
    return [(r.id, roles[r.id]) for r in catalog.rules if r.id in wanted]


def plan_definition(catalog: Catalog, service: Service, links: Links) -> dict[str, Any]:
    plan = members(catalog, service)
    ids = frozenset(rid for rid, _ in plan)
    patterns = query_patterns(service.prefetch)
    actions = []
    for rule_id, role in plan:
        compiled = catalog.rule(rule_id)
        assert compiled is not None  # members come from catalog.rules
        actions.append(
            rule_action(
                catalog, compiled, role, hook=service.hook, members=ids, patterns=patterns, links=links
            )
        )
    cards = sum(role == "card" for _, role in plan)
    return {
        "resourceType": "PlanDefinition",
        "id": service.id,
        "meta": {"profile": [CDS_HOOKS_PROFILE]},
        "extension": [{"url": CDS_HOOKS_ENDPOINT, "valueUri": links.endpoint(service.id)}],
        "url": canonical("PlanDefinition", service.id),
        "version": catalog.version,
        "name": computable_name(service.id),
        "title": service.title,
        "type": {"coding": [{"system": PLAN_TYPE, "code": "eca-rule", "display": "ECA Rule"}]},
        "status": "active",
        "experimental": False,
        "publisher": PUBLISHER,
        "description": (
            f"{service.description.strip()}\n\nCDS Hooks service `{service.id}` on the "
            f"`{service.hook}` hook: {len(plan)} rules, {cards} of which can return a card from this "
            "service. Decision support only. This plan describes the rules; the service executes them "
            "(its answer is the reference)."
        ),
        "usage": service.usage_requirements.strip(),
        "relatedArtifact": [
            {
                "type": "documentation",
                "display": "Every rule, value set, category and the policy, as the service runs them",
                "url": f"{links.base}/rules",
            }
        ],
        "action": actions,
    }
