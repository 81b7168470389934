"""Which example patients fire each rule: the vignettes in ``fhir_fixtures/`` run through the engine.

A reviewer reading a rule wants to see a patient it fires for. The answer is computed, never written by
hand, so it cannot drift from the rules: each vignette Bundle is evaluated at the fixtures' anchor date,
once, the first time a page asks (about 40 evaluations; start-up is not slowed), then kept.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.engine.engine import Engine
from cds_service.fixtures import ANCHOR

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExamplePatient:
    case: str  # the vignette id, e.g. V01
    patient_id: str  # the FHIR Patient id, e.g. hw-v01
    title: str


class FixtureExamples:
    """Lazily computed, then immutable: rule id -> the example patients it fires for."""

    def __init__(self, engine: Engine, fixtures_dir: Path) -> None:
        self._engine = engine
        self._dir = fixtures_dir / "vignettes"
        self._lock = threading.Lock()
        self._by_rule: dict[str, tuple[ExamplePatient, ...]] | None = None

    def for_rule(self, rule_id: str) -> tuple[ExamplePatient, ...]:
        return self.by_rule().get(rule_id, ())

    def by_rule(self) -> Mapping[str, tuple[ExamplePatient, ...]]:
        with self._lock:
            if self._by_rule is None:
                self._by_rule = self._compute()
            return self._by_rule

    def _compute(self) -> dict[str, tuple[ExamplePatient, ...]]:
        found: dict[str, list[ExamplePatient]] = {}
        try:
            cases: dict[str, Any] = json.loads((self._dir / "expected.json").read_text())["cases"]
        except (OSError, ValueError, KeyError) as exc:  # an installed service may ship without fixtures
            logger.info("no example patients: %s", exc)
            return {}
        for case_id, case in sorted(cases.items()):
            try:
                bundle = json.loads((self._dir / f"{case_id}.json").read_text())
            except (OSError, ValueError):
                continue
            resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict)]
            evaluation = self._engine.evaluate(resources, case["patient"], ANCHOR, ())
            example = ExamplePatient(case_id, case["patient"], case.get("title", case_id))
            for result in evaluation.fired():
                found.setdefault(result.rule.id, []).append(example)
        return {rule_id: tuple(examples) for rule_id, examples in found.items()}
