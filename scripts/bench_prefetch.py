"""What the prefetch templates ask an EHR for, narrowed against unfiltered, and the service's own fetch
path against a FHIR server as strict as Epic (issue 12's figures; ``make bench-prefetch``).

1. Narrowing, exact and in-process: each profile's templates run against each patient's resources with
   FHIR token-search semantics (``tools.local_search``); resources and JSON bytes the EHR would serialise
   (every key's searchset, as sent) against the four unfiltered searches the service used to ask for.
   Patients: the Synthea bundles and a 10,000-Observation patient (``bench_workloads``).
2. End to end: sekmet (real server) behind the strict proxy (``tests/integration/strict_fhir.py``), the
   service in a thread; calls without prefetch (the service runs the profile's queries), per patient.

    .venv/bin/python scripts/bench_prefetch.py [--calls 20] [--no-write]

It prints its tables and writes them into docs/ehr-profiles.md between the ``prefetch-figures`` markers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path[:0] = [str(SCRIPTS), str(ROOT)]

import bench_workloads as workloads  # noqa: E402

from cds_service.catalog import load_catalog  # noqa: E402
from cds_service.fixtures import searchset  # noqa: E402
from cds_service.main import create_app  # noqa: E402
from cds_service.prefetch import render  # noqa: E402
from cds_service.tools import local_search  # noqa: E402

DOC = ROOT / "docs" / "ehr-profiles.md"
BEGIN, END = "<!-- prefetch-figures:begin (make bench-prefetch) -->", "<!-- prefetch-figures:end -->"
UNFILTERED = {
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
}
PROFILES = ("generic", "epic", "oracle")
KEPT = {"Patient", "Condition", "Observation", "MedicationRequest", "MedicationStatement", "Medication"}
Resource = dict[str, Any]


def patients(today: date) -> dict[str, tuple[str, list[Resource]]]:
    out = {}
    for stem, resources in workloads.synthea_patients().items():
        pid = next(str(r["id"]) for r in resources if r.get("resourceType") == "Patient")
        kept = [workloads.retarget(r, pid) for r in resources if r.get("resourceType") in KEPT]
        out[stem.split("_")[0] + " " + stem.split("_")[1]] = (pid, kept)
    _, many = workloads.many_observations_resources(10_000, today)
    moved = [workloads.retarget(r, "bench-10k") for r in many]  # a patient of its own on the server
    moved[0]["id"] = "bench-10k"
    out["10,000 Observations"] = ("bench-10k", moved)
    return out


def asked(templates: Mapping[str, str], pid: str, resources: list[Resource]) -> tuple[int, int, int]:
    """(resources, distinct resources, JSON bytes) the templates return for this patient."""
    count, size = 0, 0
    seen: set[tuple[str, Any]] = set()
    for template in templates.values():
        relative = render(template, {"patientId": pid})
        assert relative is not None
        found = local_search.run(relative, resources)
        items = found if isinstance(found, list) else [found] if found else []
        count += len(items)
        seen.update((r["resourceType"], r.get("id")) for r in items)
        size += len(orjson.dumps(searchset(items) if isinstance(found, list) else found))
    return count, len(seen), size


def narrowing(today: date) -> list[str]:
    rows = [
        "| patient | profile | queries | resources (distinct) | JSON bytes | vs unfiltered |",
        "|---|---|---|---|---|---|",
    ]
    for name, (pid, resources) in patients(today).items():
        everything = {**UNFILTERED, "patient": "Patient/{{context.patientId}}"}
        base = asked(everything, pid, resources)
        rows.append(
            f"| {name} | unfiltered (before) | {len(everything)} | {base[0]:,} | {base[2]:,} | 1.00 |"
        )
        for profile in PROFILES:
            templates = load_catalog(ROOT / "rules", None, profile).service("hip-weakness").prefetch
            got = asked(templates, pid, resources)
            rows.append(
                f"| {name} | {profile} | {len(templates)} | {got[0]:,} ({got[1]:,}) | {got[2]:,} | "
                f"{got[2] / base[2]:.2f} |"
            )
    return rows


def end_to_end(today: date, calls: int) -> list[str]:
    from tests.conftest import make_settings
    from tests.integration.sekmet_server import running_sekmet
    from tests.integration.strict_fhir import strict_fhir
    from tests.reliability.servers import ServiceThread

    rows = [
        "| patient | profile | FHIR requests per call | median ms | p90 ms | cards |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp, running_sekmet(Path(tmp) / "sekmet") as fhir:
        chosen = patients(today)
        for _, (_, resources) in chosen.items():
            httpx.post(
                fhir.base_url,
                content=workloads.fhir_transaction(resources),
                timeout=600,
                headers={"Content-Type": "application/fhir+json"},
            ).raise_for_status()
        for profile in ("generic", "epic"):
            settings = make_settings(Path(tmp) / profile, ehr_profile=profile, fhir_time_budget_seconds=30)
            with strict_fhir(fhir.base_url, profile) as proxy, ServiceThread(create_app(settings)) as service:
                for name, (pid, _) in chosen.items():
                    body = workloads.request_body(None, pid, proxy.base)
                    times, requests, cards = [], 0, 0
                    with httpx.Client(timeout=120) as http:
                        for _ in range(calls):
                            before = len(proxy.seen)
                            started = time.perf_counter()
                            answer = http.post(f"{service.url}/cds-services/hip-weakness", json=body)
                            times.append((time.perf_counter() - started) * 1000)
                            answer.raise_for_status()
                            requests, cards = len(proxy.seen) - before, len(answer.json()["cards"])
                    times.sort()
                    rows.append(
                        f"| {name} | {profile} | {requests} | {statistics.median(times):.0f} | "
                        f"{times[int(0.9 * (len(times) - 1))]:.0f} | {cards} |"
                    )
    return rows


def write(sections: Iterable[str]) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + "\n".join(sections) + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    today = date.today()
    sections = [f"Measured {today.isoformat()} on {sys.platform}, {args.calls} calls per row.", ""]
    sections += [
        "**What the templates ask for** (exact: the templates run in-process against each patient)",
        "",
    ]
    sections += narrowing(today)
    print("\n".join(sections))
    e2e = ["", "**The service's own fetch, end to end** (sekmet behind the strict proxy; no prefetch)", ""]
    e2e += end_to_end(today, args.calls)
    print("\n".join(e2e))
    if not args.no_write:
        write([*sections, *e2e])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
