"""The fast decoder of hook bodies reads every patient exactly as the full parse does.

``decode_hook_body`` reads of each resource only a head (type, codes) and leaves unread what no rule can
use; ``Normaliser.worth_reading`` remembers its answer per code combination. Neither may change what the
engine concludes. Here every public vignette, every own clinical case and every Synthea patient is
decoded both ways (the fast path, and ``fast=False``: orjson into dicts, read as before), and the two
evaluations must agree on everything a card or the audit trail is built from.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cds_service.catalog import load_catalog
from cds_service.config import Settings
from cds_service.engine.engine import Engine
from cds_service.engine.evaluate import Evaluation
from cds_service.fixtures import ANCHOR
from cds_service.hookbody import _HEAD, HookBody, _codings, _component_codings, _slow, decode_hook_body
from cds_service.prefetch.supplied import Supplied
from tests.clinical.test_cases import CASES
from tests.support import (
    bundle_resources,
    case_request,
    hook_request,
    vignette_bundle,
    vignette_expectations,
)

SYNTHEA = sorted((Path(__file__).parents[2] / "fhir_fixtures" / "synthea").glob("*.json"))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load_catalog(Settings(env="development", auth="off").rules_dir).engine


def _bodies() -> Iterator[tuple[str, dict[str, Any]]]:
    for case_id, expected in sorted(vignette_expectations()["cases"].items()):
        yield case_id, hook_request(bundle_resources(vignette_bundle(case_id)), expected["patient"])
    for param in CASES:
        (case,) = param.values
        yield param.id, case_request(case)
    for path in SYNTHEA:
        resources = bundle_resources(orjson.loads(path.read_bytes()))
        patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        yield path.stem[:24], hook_request(resources, patient)


BODIES = list(_bodies())


def _resources(body: HookBody) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for value in (body.prefetch or {}).values():
        assert not isinstance(value, Exception), value
        if isinstance(value, Supplied):
            out.extend(value.resources)
    return out


def _summary(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "hip_weakness": evaluation.hip_weakness,
        "red_flag": evaluation.red_flag,
        "results": [
            (r.rule.id, r.matched, r.fired, sorted(str(e.ref()) for e in r.evidence), r.leaves)
            for r in evaluation.results
        ],
        "categories": {c: [r.rule.id for r in rs] for c, rs in evaluation.categories.items()},
        "notes": evaluation.notes,
        "unreadable": evaluation.unreadable,
    }


@pytest.mark.parametrize(("name", "request_body"), BODIES, ids=[name for name, _ in BODIES])
def test_the_fast_decoder_concludes_what_the_full_parse_does(
    engine: Engine, name: str, request_body: dict[str, Any]
) -> None:
    raw = orjson.dumps(request_body)
    fast = decode_hook_body(raw, engine.normaliser.worth_reading)
    slow = _slow(raw)
    assert fast.fast and not slow.fast, name
    assert fast.envelope == slow.envelope
    assert fast.prefetch is not None and slow.prefetch is not None
    assert fast.prefetch.keys() == slow.prefetch.keys()
    patient = request_body["context"]["patientId"]
    got = engine.evaluate(_resources(fast), patient, ANCHOR, ["work-up"])
    want = engine.evaluate(_resources(slow), patient, ANCHOR, ["work-up"])
    assert _summary(got) == _summary(want)


def test_remembered_worth_reading_answers_are_the_computed_ones(engine: Engine) -> None:
    """Every Synthea resource's head, asked twice through the memo (tuples) and once without (lists)."""
    normaliser = engine.normaliser
    heads = [
        _HEAD.decode(orjson.dumps(entry["resource"]))
        for path in SYNTHEA
        for entry in orjson.loads(path.read_bytes())["entry"]
    ]
    assert len(heads) > 400
    kept = 0
    for head in heads:
        codings, parts = _codings(head.code), _component_codings(head.component)
        unmemoised = normaliser.worth_reading(
            head.resourceType, list(codings or ()), [list(p) if p is not None else None for p in parts]
        )
        assert normaliser.worth_reading(head.resourceType, codings, parts) is unmemoised
        assert normaliser.worth_reading(head.resourceType, codings, parts) is unmemoised
        kept += unmemoised
    assert 0 < kept < len(heads)  # the Synthea patients hold both findings and irrelevant results
