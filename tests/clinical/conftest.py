"""Clinical tests only read: one app per module keeps hundreds of cases fast."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cds_service.main import create_app
from tests.conftest import make_settings
from tests.support import NOW, counter_ids


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(
        make_settings(tmp_path_factory.mktemp("clinical")), clock=lambda: NOW, id_factory=counter_ids()
    )
    with TestClient(app) as test_client:
        yield test_client
