"""Reaching the CDS service: a running one at ``--service-url``, or the app itself in this process.

In-process, the real application (``create_app``) runs inside its lifespan and is called through
``httpx.ASGITransport``: the same routes, prefetch ladder and FHIR client as a deployment, with no port
and no server to start. It runs as ``CDS_ENV=development``, ``CDS_AUTH=off``; other ``CDS_*`` settings
(rules folder, FHIR time budget) are read from the environment as usual, except storage: its audit trail
goes to a temporary SQLite database deleted afterwards, never to ``CDS_DATABASE_URL`` or ``var/``, so a
trial run cannot add records to a real audit trail.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

logger = logging.getLogger(__name__)

IN_PROCESS_BASE = "http://localhost:8080"  # what `make run` serves, so card links work when it runs


class ServiceUnavailable(Exception):
    """The service cannot be started (bad settings or rules) or reached."""


@dataclass(frozen=True)
class ServiceAnswer:
    status: int
    body: Any  # parsed JSON, or the text when the answer is not JSON
    seconds: float


class ServiceSession:
    """Discovery and hook calls over one ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, label: str) -> None:
        self.http = http
        self.label = label

    async def discovery(self) -> dict[str, Any]:
        answer = await self._send("GET", "/cds-services", None)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise ServiceUnavailable(f"discovery at {self.label} answered HTTP {answer.status}")
        return answer.body

    async def call(self, service_id: str, body: Mapping[str, Any]) -> ServiceAnswer:
        return await self._send("POST", f"/cds-services/{service_id}", body)

    async def _send(self, method: str, path: str, body: Mapping[str, Any] | None) -> ServiceAnswer:
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"cannot reach the CDS service at {self.label} ({type(exc).__name__})"
            ) from None
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text[:2000]
        return ServiceAnswer(response.status_code, parsed, time.perf_counter() - started)


@asynccontextmanager
async def open_service(
    service_url: str | None, timeout_seconds: float = 60.0
) -> AsyncIterator[ServiceSession]:
    """A session with the running service at ``service_url``, or with an in-process app when None."""
    timeout = httpx.Timeout(timeout_seconds, connect=10.0)
    if service_url:
        base = service_url.rstrip("/").removesuffix("/cds-services")
        async with httpx.AsyncClient(base_url=base, timeout=timeout, follow_redirects=False) as http:
            yield ServiceSession(http, base)
        return
    from cds_service.config import Settings
    from cds_service.main import create_app
    from cds_service.registry import RuleFileError

    with tempfile.TemporaryDirectory(prefix="cds-service-check-") as data_dir:
        try:
            settings = Settings(
                env="development", auth="off", data_dir=Path(data_dir), database_url=None
            ).with_local_secrets()
            app = create_app(settings)
        except ValidationError as exc:
            raise ServiceUnavailable(f"invalid CDS_* settings: {exc.errors()[0]['msg']}") from None
        except RuleFileError as exc:
            raise ServiceUnavailable(f"invalid rule file: {exc}") from None
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url=IN_PROCESS_BASE, timeout=timeout
            ) as http:
                yield ServiceSession(http, "the in-process service")
