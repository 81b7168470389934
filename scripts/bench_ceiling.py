"""The ceiling: a bare FastAPI endpoint that parses the hook request body and returns one card-sized JSON.

The same app as the reference measurement (``python-ecosystem.md`` §7, ``/orjson`` in ``app_freeze.py``):
``orjson.loads(await request.body())``, a fixed response serialised with orjson, and the service's own GC
treatment at import (``cds_service.main.settle_memory``: ``gc.freeze()`` and the same thresholds), so that
the two differ only in what the service does. Anything the
service does beyond this (validation, prefetch, engine, cards) is what the ratio to this ceiling measures.

It is served exactly as the service is (``cds_service.serving``: 2 uvicorn workers, one SO_REUSEPORT socket
each), so the ratio compares the applications, not the luck of how connections fell on workers: with
uvicorn's shared socket, 10 connections split anywhere from 5/5 to 10/0 and this ceiling measured
anywhere from 788 to 2,038 requests/s between runs.

    python scripts/bench_ceiling.py --port 8500 --workers 2
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from cds_service.main import settle_memory

_ACTIONS = [
    {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes", "code": c, "display": d}
    for c, d in (
        ("cds-not-applicable", "Does not apply to this patient (e.g. already assessed or arranged)"),
        ("recipient-disagrees-evidence", "Disagree with the recommendation or its evidence"),
        ("does-not-align-preferences", "Patient declines / not in line with patient preferences"),
        ("not-convenient-feasible", "Not feasible now (will revisit)"),
    )
]
CARD: dict[str, Any] = {
    "cards": [
        {
            "uuid": "8c3fdc09-736b-4e7b-86f2-a0fffed8d26c",
            "summary": "Hip weakness with no documented cause: MRI lumbar spine advised",
            "detail": "\n".join(
                [
                    "**Why**",
                    "- **Hip weakness without a documented cause**: hip flexion weakness is a focal motor "
                    "deficit (L2-L3).",
                    "",
                    "**What to do**",
                    "- Examine knee jerk, thigh sensation and the hip joint; ask about bladder, bowel and "
                    "saddle symptoms.",
                    "- MRI of the lumbar spine without contrast (ACR Low Back Pain, variant 3).",
                    "- If the weakness is mild (MRC 4), stable and under 6 weeks, 4-6 weeks of conservative "
                    "care first is reasonable (NICE NG59). Escalate at once if it worsens.",
                    "",
                    "_Rules: N-UNEXPLAINED v1.0.0. Decision support only: use clinical judgement._",
                ]
            ),
            "indicator": "warning",
            "source": {
                "label": "Choosing Wisely (NASS): focal neurological deficit is a red flag for imaging",
                "url": "https://www.aafp.org/afp/recommendations/viewRecommendation.htm?recommendationId=127",
                "topic": {
                    "system": "http://example.org/fhir/CodeSystem/hip-weakness-cds-category",
                    "code": "mri-lumbar-spine",
                    "display": "MRI lumbar spine",
                },
            },
            "suggestions": [
                {
                    "label": "Order MRI lumbar spine without contrast",
                    "uuid": "26864da9-479f-4c75-ab18-c2d3f985b4b9",
                    "actions": [
                        {
                            "type": "create",
                            "description": "Order MRI lumbar spine without contrast",
                            "resource": {
                                "resourceType": "ServiceRequest",
                                "status": "draft",
                                "intent": "order",
                                "priority": "routine",
                                "code": {
                                    "coding": [
                                        {
                                            "system": "http://loinc.org",
                                            "code": "30679-5",
                                            "display": "MR Lumbar spine WO contrast",
                                        }
                                    ],
                                    "text": "Order MRI lumbar spine without contrast",
                                },
                                "subject": {"reference": "Patient/example"},
                            },
                        }
                    ],
                }
            ],
            "selectionBehavior": "any",
            "overrideReasons": _ACTIONS,
            "links": [
                {
                    "label": "Rule N-UNEXPLAINED: Hip weakness without an identified cause",
                    "url": "http://127.0.0.1/rules/N-UNEXPLAINED",
                    "type": "absolute",
                }
            ],
        }
    ]
}

app = FastAPI()


@app.get("/")
async def ready() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


@app.post("/cds-services/{service_id}")
async def ceiling(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    if not isinstance(payload, dict):
        return Response(b'{"error":"not an object"}', status_code=400, media_type="application/json")
    return Response(content=orjson.dumps(CARD), media_type="application/json")


settle_memory()  # the service's own GC treatment (freeze after start-up, the same thresholds)


if __name__ == "__main__":
    import uvicorn

    from cds_service.serving import serve

    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--workers", type=int, default=2)
    args = cli.parse_args()
    config = uvicorn.Config(
        "bench_ceiling:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    raise SystemExit(serve(config))
