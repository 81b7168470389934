"""Regenerate fhir_fixtures/ from the clinical vignettes (compact form) and cases.

    python scripts/generate_fixtures.py [path/to/vignettes-public.json]

Writes, for every vignette, a FHIR R4 transaction Bundle (validated with fhir.resources R4B) dated for
``cds_service.fixtures.ANCHOR``, the expected outcomes in ``expected.json``, and the OpenAPI examples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cds_service.fixtures import ANCHOR, case_patient_id, case_resources, transaction_bundle, validate_r4
from cds_service.tools.local_search import prefetch_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "clinical" / "vignettes-public.json"
OUT = ROOT / "fhir_fixtures"


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    cases = json.loads(source.read_text())
    expected = {}
    for case in cases:
        resources = case_resources(case, ANCHOR)
        validate_r4(resources)
        write(OUT / "vignettes" / f"{case['id']}.json", transaction_bundle(resources))
        expected[case["id"]] = {
            "title": case["title"],
            "patient": case_patient_id(case),
            "pathways": case["pathways"],
            **case["expected"],
        }
    write(OUT / "vignettes" / "expected.json", {"anchor": ANCHOR.isoformat(), "cases": expected})
    examples = {
        "V01": ("red-flag-cauda-equina", "Red flag: new urinary retention and saddle numbness"),
        "V50": ("radiculopathy-and-hip-oa", "L3 radiculopathy with hip osteoarthritis"),
        "V33": ("hip-oa-physiotherapy", "Hip osteoarthritis: physiotherapy"),
        "V46": ("no-hip-weakness", "No hip weakness: no cards"),
    }
    for cid, (slug, summary) in examples.items():
        case = next(c for c in cases if c["id"] == cid)
        resources = case_resources(case, ANCHOR)
        request = {
            "hookInstance": f"d1577c69-dfbe-44ad-ba6d-3e05e953b2{cid[1:].zfill(2)}",
            "hook": "patient-view",
            "context": {"userId": "Practitioner/example", "patientId": case_patient_id(case)},
            "prefetch": prefetch_for(resources),
        }
        write(OUT / "examples" / f"{slug}.request.json", {"summary": f"{cid}: {summary}", "value": request})
    print(f"wrote {len(cases)} vignettes and {len(examples)} examples to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
