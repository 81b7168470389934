"""Shared pieces of the reliability tests, and the counts they report at the end of the run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.faulty_fhir import FaultyServer
from tests.security.helpers import KeyRing
from tests.support import bundle_resources, vignette_bundle

#: What the reliability tests exercised, printed in the terminal summary (docs/reliability.md quotes it).
COUNTS: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if COUNTS:
        parts = ", ".join(f"{name}: {value:,}" for name, value in sorted(COUNTS.items()))
        terminalreporter.write_line(f"reliability: {parts}")


@pytest.fixture(scope="session")
def faulty() -> Iterator[FaultyServer]:
    """The misbehaving FHIR/JWKS server, serving vignette V01 (cauda equina red flag) under ``ok``."""
    with FaultyServer(bundle_resources(vignette_bundle("V01"))) as server:
        yield server


@pytest.fixture(scope="module")
def jwks_server(keys: KeyRing) -> Iterator[FaultyServer]:
    with FaultyServer(jwks=KeyRing.jwks(keys.ec1, keys.rsa1)) as server:
        yield server
