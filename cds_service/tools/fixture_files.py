"""The test patients on disk, made ready to load into any FHIR server, idempotently.

- Every ``*.json`` transaction Bundle under the fixtures folder is one patient (hook request examples
  and ``expected.json`` are skipped).
- Bundles in a folder whose ``expected.json`` names an ``anchor`` (the vignettes) are written for that
  "today"; ``fixtures.shift_dates`` moves them so the anchor becomes the real today, or a case that
  says "weakness 6 days ago" would be ten months old by now.
- Synthea-style bundles POST every entry with a ``urn:uuid`` fullUrl; loaded as they are, a second run
  would duplicate the patient. They are rewritten to ``PUT Type/<uuid>`` with the references pointing
  at those stable ids, so loading twice updates instead of creating.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.fixtures import shift_dates

logger = logging.getLogger(__name__)

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_URN = "urn:uuid:"


class FixtureError(ValueError):
    """A fixture file that cannot be loaded (not JSON, not a transaction Bundle, no Patient)."""


@dataclass(frozen=True)
class PatientBundle:
    """One patient's transaction Bundle, ready to send."""

    name: str  # file stem: V01, Barney_Abbott_3f22...
    title: str
    patient_id: str
    bundle: dict[str, Any]
    shifted_days: int

    @property
    def size(self) -> int:
        return len(self.bundle.get("entry") or [])


def discover(root: Path, only: Sequence[str] = ()) -> list[Path]:
    """Transaction Bundle files under ``root`` (sorted), optionally only those whose name starts with
    one of ``only`` (case-insensitive: ``V01``, ``barney``)."""
    if not root.is_dir():
        raise FixtureError(f"{root} is not a folder")
    wanted = [w.lower() for w in only]
    found = []
    for path in sorted(root.rglob("*.json")):
        if path.name == "expected.json" or path.name.endswith(".request.json"):
            continue
        if wanted and not any(path.stem.lower().startswith(w) for w in wanted):
            continue
        found.append(path)
    return found


def prepare(path: Path, today: date) -> PatientBundle:
    """Read one fixture file and return its loadable form (dates shifted, stable ids)."""
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FixtureError(f"{path.name}: cannot read it as JSON ({exc})") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FixtureError(f"{path.name}: not a FHIR Bundle")
    if bundle.get("type") != "transaction":
        raise FixtureError(f"{path.name}: Bundle.type is {bundle.get('type')!r}, not 'transaction'")
    meta = _folder_expectations(path.parent)
    anchor = meta.get("anchor")
    days = (today - date.fromisoformat(anchor)).days if isinstance(anchor, str) else 0
    ready = with_stable_ids(shift_dates(bundle, days) if days else bundle)
    patient = _patient(ready, path.name)
    case = (meta.get("cases") or {}).get(path.stem) or {}
    title = f"{path.stem} {case['title']}" if case.get("title") else _display_name(patient) or path.stem
    return PatientBundle(path.stem, title, str(patient["id"]), ready, days)


def with_stable_ids(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """``POST Type`` entries with a ``urn:uuid:<id>`` fullUrl become ``PUT Type/<id>``; references to the
    urn become ``Type/<id>``. Conditional creates (``ifNoneExist``) and PUTs are left as they are."""
    out = copy.deepcopy(dict(bundle))
    renamed: dict[str, str] = {}
    for entry in out.get("entry") or []:
        request = entry.get("request") or {}
        resource = entry.get("resource")
        full_url = str(entry.get("fullUrl") or "")
        if (
            str(request.get("method", "")).upper() != "POST"
            or request.get("ifNoneExist")
            or not isinstance(resource, dict)
            or not full_url.startswith(_URN)
            or "?" in str(request.get("url", ""))
        ):
            continue
        rid = full_url.removeprefix(_URN)
        if not _FHIR_ID.match(rid):
            continue
        rtype = str(resource["resourceType"])
        resource["id"] = rid
        entry["request"] = {"method": "PUT", "url": f"{rtype}/{rid}"}
        renamed[full_url] = f"{rtype}/{rid}"
    if renamed:
        _rewrite_references(out.get("entry") or [], renamed)
    return out


def _rewrite_references(value: Any, renamed: Mapping[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in renamed:
                value[key] = renamed[item]
            else:
                _rewrite_references(item, renamed)
    elif isinstance(value, list):
        for item in value:
            _rewrite_references(item, renamed)


def patient_entries(bundle: Mapping[str, Any]) -> Iterable[tuple[int, dict[str, Any]]]:
    for i, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            yield i, resource


def _patient(bundle: Mapping[str, Any], name: str) -> dict[str, Any]:
    patients = [r for _, r in patient_entries(bundle)]
    if len(patients) != 1 or not patients[0].get("id"):
        raise FixtureError(f"{name}: expected exactly one Patient with an id, found {len(patients)}")
    return patients[0]


def _display_name(patient: Mapping[str, Any]) -> str | None:
    for name in patient.get("name") or []:
        given = " ".join(str(g) for g in name.get("given") or [])
        text = name.get("text") or f"{given} {name.get('family', '')}".strip()
        if text:
            return re.sub(r"\d+", "", str(text)).strip()  # Synthea appends digits to names
    return None


def _folder_expectations(folder: Path) -> dict[str, Any]:
    expected = folder / "expected.json"
    if not expected.is_file():
        return {}
    try:
        data = json.loads(expected.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is not valid JSON; dates are loaded unshifted", expected)
        return {}
    return data if isinstance(data, dict) else {}
