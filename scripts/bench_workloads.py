"""Benchmark workloads: hook request bodies built from Synthea patients (no network, deterministic).

- ``synthea_sized``: one Synthea patient's Patient, Conditions, Observations and MedicationRequests plus a
  hip-weakness finding (so cards are produced), padded with Observations of another Synthea patient to
  about 250 resources / 210 KB: the size of a median Synthea patient in an EHR's prefetch.
- ``observations(n)``: the same patient header and hip-weakness finding plus ``n`` Observations recycled
  from all Synthea patients (new ids), for the linearity check (1,000 and 10,000).
- ``no_prefetch``: the same hook call without ``prefetch``, with ``fhirServer`` set: the service fetches.

Every resource's ``subject`` / ``patient`` reference is rewritten to ``Patient/<id>`` (Synthea bundles use
``urn:uuid:`` references), as an EHR's FHIR server would return it.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from cds_service.fixtures import SYSTEMS, transaction_bundle
from cds_service.tools.local_search import everything_prefetch

ROOT = Path(__file__).resolve().parent.parent
SHARED_SYNTHEA = ROOT.parent / "shared" / "data" / "synthea"
LOCAL_SYNTHEA = ROOT / "fhir_fixtures" / "synthea"
PREFETCH_TYPES = ("Patient", "Condition", "Observation", "MedicationRequest", "MedicationStatement")
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
TARGET_RESOURCES = 250
BASE_PATIENT = "Adalberto_Hartmann"  # 344 entries, 222 prefetchable resources: closest to the median
PAD_PATIENT = "Ali_Harris"

Resource = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    name: str
    body: bytes
    resources: int  # resources in the prefetch (0 when fetched)
    patient_id: str


def synthea_dir() -> Path:
    """``../shared/data/synthea`` when present (4 patients), else the 2 copied into ``fhir_fixtures``."""
    if SHARED_SYNTHEA.is_dir() and any(SHARED_SYNTHEA.glob("*.json")):
        return SHARED_SYNTHEA
    return LOCAL_SYNTHEA


def synthea_patients() -> dict[str, list[Resource]]:
    """Every Synthea bundle as ``{file stem: [resources]}``, sorted by name."""
    out: dict[str, list[Resource]] = {}
    for path in sorted(synthea_dir().glob("*.json")):
        bundle = json.loads(path.read_text())
        out[path.stem] = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    return out


def _pick(patients: Mapping[str, list[Resource]], prefix: str, avoid: str | None = None) -> list[Resource]:
    for stem, resources in patients.items():
        if stem.startswith(prefix):
            return resources
    # CI fallback (only 2 patients): the largest one, or the other one for padding
    ranked = sorted(patients.items(), key=lambda kv: -len(kv[1]))
    for stem, resources in ranked:
        if stem != avoid:
            return resources
    return ranked[0][1]


def _stem_of(patients: Mapping[str, list[Resource]], resources: list[Resource]) -> str:
    return next(stem for stem, r in patients.items() if r is resources)


def retarget(resource: Mapping[str, Any], patient_id: str, new_id: str | None = None) -> Resource:
    out = copy.deepcopy(dict(resource))
    if new_id is not None:
        out["id"] = new_id
    for key in ("subject", "patient"):
        if isinstance(out.get(key), dict):
            out[key] = {"reference": f"Patient/{patient_id}"}
    return out


def hip_weakness_finding(patient_id: str, today: date) -> list[Resource]:
    """An active 'Muscle weakness' Condition and a hip flexion MRC grade 4: the entry criterion fires."""
    subject = {"reference": f"Patient/{patient_id}"}
    return [
        {
            "resourceType": "Condition",
            "id": f"{patient_id[:40]}-hw-con",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "code": {
                "coding": [
                    {"system": SYSTEMS["SCT"], "code": "26544005", "display": "Muscle weakness (finding)"}
                ],
                "text": "Muscle weakness",
            },
            "subject": subject,
            "onsetDateTime": (today - timedelta(days=10)).isoformat(),
            "recordedDate": (today - timedelta(days=9)).isoformat(),
        },
        {
            "resourceType": "Observation",
            "id": f"{patient_id[:40]}-hw-mrc",
            "status": "final",
            "code": {
                "coding": [
                    {
                        "system": SYSTEMS["LOCAL"],
                        "code": "hip-flexion-mrc",
                        "display": "Hip flexion strength, MRC grade",
                    }
                ]
            },
            "subject": subject,
            "effectiveDateTime": (today - timedelta(days=3)).isoformat(),
            "valueInteger": 4,
        },
    ]


def request_body(
    resources: Iterable[Mapping[str, Any]] | None, patient_id: str, fhir_server: str | None = None
) -> dict[str, Any]:
    """The CDS Hooks request: every resource supplied at once (``everything_prefetch``), so the body is
    the patient's whole prefetch (~210 KB for the Synthea workload), whatever the templates narrow."""
    body: dict[str, Any] = {
        "hookInstance": HOOK_INSTANCE,
        "hook": "patient-view",
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
    }
    if resources is not None:
        body["prefetch"] = everything_prefetch(resources)
    if fhir_server:
        body["fhirServer"] = fhir_server
    return body


def _header(base: list[Resource], today: date) -> tuple[str, list[Resource]]:
    """The base patient's prefetchable resources (references rewritten) + the hip-weakness finding."""
    patient = next(r for r in base if r.get("resourceType") == "Patient")
    pid = str(patient["id"])
    kept = [retarget(r, pid) for r in base if r.get("resourceType") in PREFETCH_TYPES]
    return pid, [*kept, *hip_weakness_finding(pid, today)]


def synthea_sized_resources(today: date) -> tuple[str, list[Resource]]:
    """~250 resources (~210 KB as a request): a Synthea patient + hip weakness, padded with Observations."""
    patients = synthea_patients()
    base = _pick(patients, BASE_PATIENT)
    pad = _pick(patients, PAD_PATIENT, avoid=_stem_of(patients, base))
    pid, resources = _header(base, today)
    pad_obs = [r for r in pad if r.get("resourceType") == "Observation"]
    i = 0
    while len(resources) < TARGET_RESOURCES and pad_obs:
        source = pad_obs[i % len(pad_obs)]
        resources.append(retarget(source, pid, str(uuid.UUID(int=i + 1))))
        i += 1
    return pid, resources[:TARGET_RESOURCES] if len(resources) > TARGET_RESOURCES else resources


def observation_pool() -> list[Resource]:
    """Every Observation of every Synthea patient (vitals, labs, scores: mostly codes no rule reads)."""
    return [r for rs in synthea_patients().values() for r in rs if r.get("resourceType") == "Observation"]


def many_observations_resources(n: int, today: date) -> tuple[str, list[Resource]]:
    """Patient + hip-weakness finding + ``n`` Synthea Observations with fresh ids."""
    patients = synthea_patients()
    base = _pick(patients, BASE_PATIENT)
    patient = next(r for r in base if r.get("resourceType") == "Patient")
    pid = str(patient["id"])
    pool = observation_pool()
    obs = [retarget(pool[i % len(pool)], pid, str(uuid.UUID(int=(1 << 64) + i))) for i in range(n)]
    return pid, [retarget(patient, pid), *hip_weakness_finding(pid, today), *obs]


def encode(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body)


def synthea_sized(today: date) -> Workload:
    pid, resources = synthea_sized_resources(today)
    return Workload("patient-view 250 res", encode(request_body(resources, pid)), len(resources), pid)


def observations(n: int, today: date) -> Workload:
    pid, resources = many_observations_resources(n, today)
    return Workload(f"{n:,} Observations", encode(request_body(resources, pid)), len(resources), pid)


def no_prefetch(patient_id: str, fhir_base: str) -> Workload:
    return Workload("missing prefetch", encode(request_body(None, patient_id, fhir_base)), 0, patient_id)


def _without_urn_references(value: Any) -> Any:
    """Drop references to ``urn:uuid:`` resources (Encounters, Practitioners...) that are not loaded."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if _is_urn_ref(v) or (isinstance(v, list) and v and all(_is_urn_ref(x) for x in v)):
                continue
            out[k] = _without_urn_references(v)
        return out
    if isinstance(value, list):
        return [_without_urn_references(v) for v in value]
    return value


def _is_urn_ref(v: Any) -> bool:
    return isinstance(v, dict) and str(v.get("reference", "")).startswith("urn:")


def fhir_transaction(resources: Iterable[Mapping[str, Any]]) -> bytes:
    """A PUT transaction Bundle (stable ids) to load the patient into a FHIR server (references to
    resources that are not in the bundle are dropped: the server would refuse the transaction)."""
    return orjson.dumps(transaction_bundle(_without_urn_references(list(resources))))


def summary(resources: list[Resource]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in resources:
        counts[str(r.get("resourceType"))] = counts.get(str(r.get("resourceType")), 0) + 1
    return counts


if __name__ == "__main__":
    w = synthea_sized(date.today())
    print(w.name, w.resources, "resources,", len(w.body), "bytes")
    for n in (1000, 10000):
        o = observations(n, date.today())
        print(o.name, o.resources, "resources,", len(o.body), "bytes")
