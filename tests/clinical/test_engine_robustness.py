"""Whatever shape the EHR's data has, the engine answers: it never raises (no 500), it records what it
could not read. Hypothesis replaces or deletes members anywhere in real vignette resources."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.catalog import Catalog
from cds_service.fixtures import ANCHOR
from tests.support import bundle_resources, vignette_bundle, vignette_expectations

CASES = sorted(vignette_expectations()["cases"])
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(
        ["2026-01-14", "2026-13-45", "2026", "T-1d", "Cel", "[degF]", "active", "final", "C61"]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, member in value.items():
            out += paths(member, (*prefix, key))
    elif isinstance(value, list):
        for i, member in enumerate(value):
            out += paths(member, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case_id=st.sampled_from(CASES), data=st.data())
def test_engine_never_raises_on_mangled_resources(
    catalog: Catalog, case_id: str, data: st.DataObject
) -> None:
    resources = copy.deepcopy(bundle_resources(vignette_bundle(case_id)))
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(resources))
        where = paths(target)
        if not where:
            continue
        path = data.draw(st.sampled_from(where))
        parent = target
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = data.draw(JSON)
    service = catalog.service("hip-weakness")
    evaluation = catalog.engine.evaluate(resources, "hw-x", ANCHOR, service.emit_pathways)
    assert evaluation.today == ANCHOR
