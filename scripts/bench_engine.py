"""The rules engine alone, in-process: ``Engine.evaluate(resources, patient_id, today, pathways)``.

Reports the median time per evaluation and the µs per resource for each Synthea patient (its Patient,
Conditions, Observations and MedicationRequests, plus the hip-weakness finding so every pathway runs),
for the 250-resource benchmark patient and for generated 1,000 / 10,000-Observation patients. No HTTP,
no JSON parsing, no cards: only what ``cds_service.engine`` does.

    .venv/bin/python scripts/bench_engine.py
"""

from __future__ import annotations

import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_workloads as workloads

from cds_service.catalog import load_catalog

RULES = workloads.ROOT / "rules"


@dataclass(frozen=True)
class EngineCost:
    name: str
    resources: int
    runs: int
    median_ms: float
    normalise_ms: float | None  # of which: FHIR -> records
    categories: int  # card categories emitted (-1: unknown)

    @property
    def us_per_resource(self) -> float:
        return self.median_ms * 1000 / self.resources if self.resources else 0.0


def _timed(fn: Callable[[], object], min_seconds: float, min_runs: int, max_runs: int) -> list[float]:
    fn()  # warm
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _categories(evaluation: Any) -> int:
    """Card categories emitted, read defensively (the Evaluation type belongs to the engine)."""
    try:
        return len(evaluation.categories)
    except (AttributeError, TypeError):
        return -1


def cases(today: date) -> list[tuple[str, str, list[dict[str, Any]]]]:
    out: list[tuple[str, str, list[dict[str, Any]]]] = []
    for stem, resources in workloads.synthea_patients().items():
        patient = next(r for r in resources if r.get("resourceType") == "Patient")
        pid = str(patient["id"])
        kept = [
            workloads.retarget(r, pid) for r in resources if r.get("resourceType") in workloads.PREFETCH_TYPES
        ]
        name = "Synthea " + " ".join(stem.split("_")[:2])
        out.append((name, pid, [*kept, *workloads.hip_weakness_finding(pid, today)]))
    pid, sized = workloads.synthea_sized_resources(today)
    out.append(("benchmark patient (210 KB request)", pid, sized))
    for n in (1_000, 10_000):
        pid, many = workloads.many_observations_resources(n, today)
        out.append((f"{n:,} Observations", pid, many))
    return out


def engine_costs(today: date | None = None, min_seconds: float = 0.6) -> list[EngineCost]:
    today = today or date.today()
    engine = load_catalog(RULES).engine
    pathways = load_catalog(RULES).service("hip-weakness").emit_pathways
    gc.collect()
    gc.freeze()  # as the service does after start-up; the patient data below stays collectable
    results: list[EngineCost] = []
    for name, pid, resources in cases(today):
        big = len(resources) > 5_000
        runs = _timed(
            functools.partial(engine.evaluate, resources, pid, today, pathways),
            min_seconds,
            3 if big else 5,
            15 if big else 300,
        )
        n_runs = _timed(
            functools.partial(engine.normaliser.normalise, resources, pid, today),
            min_seconds / 2,
            3,
            15 if big else 300,
        )
        normalise_ms: float | None = statistics.median(n_runs)
        emitted = _categories(engine.evaluate(resources, pid, today, pathways))
        results.append(
            EngineCost(name, len(resources), len(runs), statistics.median(runs), normalise_ms, emitted)
        )
    return results


def table(costs: Sequence[EngineCost]) -> list[Mapping[str, str]]:
    return [
        {
            "patient": c.name,
            "resources": f"{c.resources:,}",
            "evaluate (median)": f"{c.median_ms:.2f} ms",
            "of which normalise": f"{c.normalise_ms:.2f} ms" if c.normalise_ms is not None else "n/a",
            "µs / resource": f"{c.us_per_resource:.1f}",
            "card categories": str(c.categories),
            "runs": str(c.runs),
        }
        for c in costs
    ]


if __name__ == "__main__":
    for row in table(engine_costs()):
        print(" | ".join(f"{k}: {v}" for k, v in row.items()))
