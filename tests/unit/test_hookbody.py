"""The fast decoder of hook bodies reads every patient exactly as the full parse does.

``decode_hook_body`` reads of each resource only a head (type, codes) and leaves unread what no rule can
use; ``Normaliser.worth_reading`` remembers its answer per code combination. Neither may change what the
engine concludes. Here every public vignette, every own clinical case and every Synthea patient is
decoded both ways (the fast path, and ``fast=False``: orjson into dicts, read as before), and the two
evaluations must agree on everything a card or the audit trail is built from.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cds_service.catalog import Catalog, load_catalog
from cds_service.config import Settings
from cds_service.engine.engine import Engine
from cds_service.fixtures import ANCHOR
from cds_service.hookbody import _HEAD, _codings, _component_codings, _slow, decode_hook_body
from tests.patients import SYNTHEA, every_test_patient, resources_of, summary, work_up

BODIES = list(every_test_patient())


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(Settings(env="development", auth="off").rules_dir)


@pytest.fixture(scope="module")
def engine(catalog: Catalog) -> Engine:
    return catalog.engine


@pytest.mark.parametrize(("name", "request_body"), BODIES, ids=[name for name, _ in BODIES])
def test_the_fast_decoder_concludes_what_the_full_parse_does(
    catalog: Catalog, engine: Engine, name: str, request_body: dict[str, Any]
) -> None:
    raw = orjson.dumps(request_body)
    fast = decode_hook_body(raw, engine.normaliser.worth_reading)
    slow = _slow(raw)
    assert fast.fast and not slow.fast, name
    assert fast.envelope == slow.envelope
    assert fast.prefetch is not None and slow.prefetch is not None
    assert fast.prefetch.keys() == slow.prefetch.keys()
    patient = request_body["context"]["patientId"]
    got = engine.evaluate(resources_of(fast), patient, ANCHOR, work_up(catalog))
    want = engine.evaluate(resources_of(slow), patient, ANCHOR, work_up(catalog))
    assert summary(got) == summary(want)


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
