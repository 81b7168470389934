"""``cds-service load-fixtures``: put the test patients into a FHIR server, one transaction per patient.

Every entry is a PUT with a stable id, so a second run updates what the first created and creates
nothing (the summary says so). Servers whose CapabilityStatement does not offer ``transaction`` get
one PUT per resource instead, in Bundle order (Patient first). A failing patient is reported with the
server's OperationOutcome and the run goes on; an authentication or connection failure stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from cds_service.config import PROJECT_ROOT
from cds_service.fhir.client import FhirClient, join
from cds_service.fhir.errors import FhirAuthError, FhirError, FhirTransportError
from cds_service.tools.console import Console
from cds_service.tools.fixture_files import FixtureError, PatientBundle, discover, prepare

logger = logging.getLogger(__name__)

DEFAULT_FIXTURES = PROJECT_ROOT / "fhir_fixtures"


@dataclass(frozen=True)
class LoadOptions:
    fhir_server: str
    token: str | None = None
    fixtures: Path = DEFAULT_FIXTURES
    only: tuple[str, ...] = ()
    today: date | None = None  # default: today (UTC, as the service's clock)
    as_json: bool = False
    timeout_seconds: float = 120.0


@dataclass
class Loaded:
    """What happened to one patient's Bundle."""

    name: str
    title: str
    patient_id: str
    resources: int
    created: int = 0
    updated: int = 0
    other: int = 0
    error: str | None = None


@dataclass
class LoadReport:
    server: str
    patients: list[Loaded] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(p.error is None for p in self.patients)

    def totals(self) -> dict[str, int]:
        return {
            "patients": sum(p.error is None for p in self.patients),
            "resources": sum(p.resources for p in self.patients if p.error is None),
            "created": sum(p.created for p in self.patients),
            "updated": sum(p.updated for p in self.patients),
            "failed": sum(p.error is not None for p in self.patients),
        }


def run(options: LoadOptions, console: Console) -> int:
    try:
        report = asyncio.run(load(options, console))
    except FixtureError as exc:
        console.error(str(exc))
        return 1
    if options.as_json:
        console.line(json.dumps({**asdict(report), "totals": report.totals()}, indent=2))
    else:
        _print_summary(report, console)
    return 0 if report.ok else 1


async def load(options: LoadOptions, console: Console) -> LoadReport:
    """Load every selected fixture; never raises for FHIR errors (they are in the report)."""
    today = options.today or datetime.now(UTC).date()
    paths = discover(options.fixtures, options.only)
    if not paths:
        raise FixtureError(f"no fixture Bundles under {options.fixtures} match {list(options.only)}")
    bundles = [prepare(path, today) for path in paths]
    report = LoadReport(options.fhir_server)
    started = time.perf_counter()
    timeout = httpx.Timeout(options.timeout_seconds, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        fhir = FhirClient(http)
        with console.step(f"FHIR server {options.fhir_server}") as step:
            try:
                transactions = await _supports_transactions(fhir, options, console)
            except FhirError as exc:
                step.failed(f"HTTP {exc.status}" if exc.status else type(exc).__name__)
                report.stopped = exc.describe()
                return report
            step.done("transactions" if transactions else "no transactions: one PUT per resource")
        shifted = {b.shifted_days for b in bundles if b.shifted_days}
        for days in shifted:
            console.info(f"  vignette dates moved by {days:+d} days so that their 'today' is {today}")
        for patient in bundles:
            loaded = Loaded(patient.name, patient.title, patient.patient_id, patient.size)
            report.patients.append(loaded)
            try:
                if transactions:
                    await _load_transaction(fhir, options, patient, loaded)
                else:
                    await _load_by_put(fhir, options, patient, loaded)
            except (FhirAuthError, FhirTransportError) as exc:
                loaded.error = report.stopped = exc.describe()
                _print_patient(loaded, console, options)
                break
            except FhirError as exc:
                loaded.error = exc.describe()
            _print_patient(loaded, console, options)
    report.seconds = time.perf_counter() - started
    return report


async def _supports_transactions(fhir: FhirClient, options: LoadOptions, console: Console) -> bool:
    """Read the CapabilityStatement: is it R4, and does it offer system-level ``transaction``?"""
    capability = await fhir.get(join(options.fhir_server, "metadata"), options.token)
    version = str(capability.get("fhirVersion") or "")
    if version and not version.startswith("4."):
        console.warn(f"the server says FHIR {version}; the fixtures are FHIR R4 (4.0.x)")
    rest = capability.get("rest") or []
    interactions = {
        str(i.get("code"))
        for r in rest
        if isinstance(r, Mapping)
        for i in r.get("interaction") or []
        if isinstance(i, Mapping)
    }
    return not interactions or "transaction" in interactions


async def _load_transaction(
    fhir: FhirClient, options: LoadOptions, patient: PatientBundle, loaded: Loaded
) -> None:
    response = await fhir.transaction(options.fhir_server, patient.bundle, options.token)
    entries = response.get("entry") or []
    for i, entry in enumerate(entries):
        status = str(((entry or {}).get("response") or {}).get("status") or "")
        _count(loaded, status[:3])
        if i < len(patient.bundle["entry"]):
            sent = patient.bundle["entry"][i].get("resource") or {}
            if sent.get("resourceType") == "Patient":
                loaded.patient_id = _id_from_location(entry, loaded.patient_id)


async def _load_by_put(
    fhir: FhirClient, options: LoadOptions, patient: PatientBundle, loaded: Loaded
) -> None:
    for entry in patient.bundle["entry"]:
        request = entry.get("request") or {}
        if str(request.get("method")).upper() != "PUT":
            raise FhirError(
                f"entry {request.get('method')} {request.get('url')} needs a transaction "
                "(this server offers none)"
            )
        status, _ = await fhir.put(options.fhir_server, entry["resource"], options.token)
        _count(loaded, str(status))


def _count(loaded: Loaded, status: str) -> None:
    if status == "201":
        loaded.created += 1
    elif status == "200":
        loaded.updated += 1
    else:
        loaded.other += 1


def _id_from_location(entry: Mapping[str, Any], default: str) -> str:
    """``Patient/<id>/_history/1`` (relative or absolute) -> ``<id>``; servers may assign ids."""
    location = str(((entry or {}).get("response") or {}).get("location") or "")
    parts = location.split("/_history", 1)[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return default


def _print_patient(loaded: Loaded, console: Console, options: LoadOptions) -> None:
    if options.as_json:
        return
    ref = f"Patient/{loaded.patient_id}"
    if loaded.error:
        console.line(f"  {console.style('FAILED', 'red', 'bold')} {ref} ({loaded.name}): {loaded.error}")
        return
    counts = f"{loaded.created} created, {loaded.updated} updated"
    if loaded.other:
        counts += f", {loaded.other} other"
    title = loaded.title if len(loaded.title) <= 44 else loaded.title[:43] + "…"
    console.line(
        f"  {console.style(f'{ref:<48}', 'bold')} {title:<45} {loaded.resources:>4} resources: {counts}"
    )


def _print_summary(report: LoadReport, console: Console) -> None:
    totals = report.totals()
    if report.patients:
        console.line(
            f"{totals['patients']} patients, {totals['resources']} resources loaded into {report.server} "
            f"({totals['created']} created, {totals['updated']} updated) in {report.seconds:.1f} s"
        )
    if report.stopped:
        console.error(f"stopped, nothing more was sent: {report.stopped}")
    elif totals["failed"]:
        console.error(f"{totals['failed']} patient(s) could not be loaded (see above)")


def parse_only(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--only V01,V33 --only barney`` -> ("V01", "V33", "barney")."""
    return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())
