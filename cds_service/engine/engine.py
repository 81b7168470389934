"""The engine the orchestrator calls: one object per rule set, built once by ``engine.compile``.

``evaluate`` is pure: the patient's FHIR resources (plain dicts), the patient id and ``today`` in, an
``Evaluation`` out, with no I/O and no clock. Everything else the service knows about rules (card texts,
services, documentation) lives outside the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.engine.evaluate import CompiledRule, Evaluation, evaluate
from cds_service.engine.model import PolicyFile
from cds_service.engine.normalise import Normaliser
from cds_service.engine.terminology import Terminology


@dataclass(frozen=True)
class Engine:
    """Compiled rules, their terminology and policy: immutable, shared by every call."""

    terminology: Terminology
    normaliser: Normaliser
    rules: tuple[CompiledRule, ...]  # dependency order, entry rule first
    policy: PolicyFile
    red_flag_valuesets: frozenset[str]

    def code_valuesets(self, resource_type: str) -> frozenset[str]:
        """The value sets some rule matches against the ``code`` of this resource type: what a query
        for the patient's data must not miss (prefetch templates are derived from it)."""
        return frozenset(vs for rule in self.rules for vs in rule.reads_codes.get(resource_type, frozenset()))

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def evaluate(
        self,
        resources: Iterable[Mapping[str, Any]],
        patient_id: str | None,
        today: date,
        emit_pathways: Iterable[str],
        selections: frozenset[str] | None = None,
    ) -> Evaluation:
        """Normalise the patient's resources and run every rule; cards are collected for the pathways
        in ``emit_pathways`` only (a patient-view service emits work-up, an order service order checks)."""
        normalised = self.normaliser.normalise(resources, patient_id, today)
        return evaluate(
            self.rules,
            self.policy,
            normalised,
            today,
            self.red_flag_valuesets,
            emit_pathways,
            selections,
        )
