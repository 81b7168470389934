"""The application factory: ``create_app(settings)``; ``uvicorn --factory cds_service.main:create_app``.

Rules are loaded and validated here, before the server accepts anything: an invalid rule file stops the
service with one clear message. Long-lived clients are opened and closed in the lifespan, and so is the
audit trail: migrations are applied at start-up (a database that is down does not stop the service), the
audit writer runs in the background, and on shutdown it writes or spools what is queued, within
``CDS_AUDIT_SHUTDOWN_SECONDS``. JWT replay detection uses the database, shared by every worker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cds_service import NATIVE, __version__
from cds_service.api import (
    audit,
    discovery,
    docs,
    errors,
    explain,
    feedback,
    fhir,
    hooks,
    openapi_docs,
    ops,
    rule_pages,
    rules,
)
from cds_service.api.deps import AppState
from cds_service.api.middleware import RequestContextMiddleware
from cds_service.artefacts import Links, build_artefacts
from cds_service.audit import AuditTrail
from cds_service.cards import IdFactory, new_id
from cds_service.catalog import load_catalog
from cds_service.config import PROJECT_ROOT, AuthMode, Environment, NativeMode, Settings
from cds_service.fhir.client import FhirClient, FhirLimits
from cds_service.hookcall import Clock, utc_now
from cds_service.logs import quiet_http_clients
from cds_service.metrics import Metrics, forget_dead_workers
from cds_service.orchestrate import Orchestrator
from cds_service.pages.examples import FixtureExamples
from cds_service.security import ClientAuthenticator, load_trusted_clients

logger = logging.getLogger(__name__)
AUDIT_METRICS_SECONDS = 5.0
GC_THRESHOLDS = (50_000, 50, 100)  # CPython defaults: (700, 10, 10)

DESCRIPTION = """
CDS Hooks 2.0.1 service for **hip flexion weakness** and its red flags.

- EHRs call `POST /cds-services/{id}` (see `GET /cds-services`).
- EHRs report what clinicians did with a card to `POST /cds-services/{id}/feedback`.
- Clinical safety reviewers read every rule and value set under **Rules** (`GET /rules`, `GET /rules/{id}`,
  `GET /valuesets`), public.
- FHIR tools read the same rules and value sets as PlanDefinition, ActivityDefinition and ValueSet resources
  under **FHIR** (`GET /fhir/metadata`, `GET /fhir/PlanDefinition`, `GET /fhir/ValueSet`), public.
- Under **Audit** (click *Authorize* and paste the audit token, `CDS_AUDIT_TOKEN`; `make run` prints one):
  every hook call with the rules that fired, on which facts, the cards returned and the feedback on them
  (`GET /audit/invocations`, `GET /audit/invocations/{hookInstance}`), statistics per rule and category
  (`GET /audit/stats`), and `POST /explain/{id}`: the cards and full trace for a request you send.

**Why was this card shown to this patient, and what did clinicians do with it?**
1. `GET /audit/invocations?patient=<the patient id>` (or `?card=<card uuid>`): the calls, newest first.
2. `GET /audit/invocations/{hookInstance}`: each rule, fired or not and on which data (resource type, id,
   code, date); the cards returned, and under each card the feedback (accepted / overridden, reasons).
3. `GET /rules/{id}` for a rule named there: its logic in words, evidence, codes and card text.
"""


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = utc_now,
    id_factory: IdFactory = new_id,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app. ``transport`` replaces the network for tests (respx also works without it)."""
    settings = settings or Settings()
    quiet_http_clients()
    catalog = load_catalog(settings.rules_dir, settings.extra_valuesets_dir, settings.ehr_profile)
    artefacts = build_artefacts(catalog, Links((settings.public_base_url or "").rstrip("/")), clock())
    clients = load_trusted_clients(settings.trusted_clients_file) if settings.trusted_clients_file else []
    if settings.auth is AuthMode.off:
        logger.warning(
            "CDS_AUTH=off: EHR calls are NOT authenticated. Never run this way with real patients."
        )

    metrics = Metrics()
    examples = FixtureExamples(catalog.engine, PROJECT_ROOT / "fhir_fixtures")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _make_data_dir(settings)
        forget_dead_workers()
        trail = AuditTrail(settings, catalog)
        await trail.start()
        try:
            if settings.env is Environment.production:
                await _require_database(trail)
            sync = asyncio.create_task(_sync_audit_metrics(trail, metrics))
            try:
                async with _serving(app, trail):
                    yield
            finally:
                sync.cancel()
        finally:
            await trail.close()

    @asynccontextmanager
    async def _serving(app: FastAPI, trail: AuditTrail) -> AsyncIterator[None]:
        timeout = httpx.Timeout(
            settings.fhir_time_budget_seconds, connect=settings.fhir_connect_timeout_seconds
        )
        async with httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        ) as http:
            fhir = FhirClient(
                http,
                FhirLimits(
                    max_response_bytes=settings.fhir_max_response_bytes,
                    max_pages=settings.fhir_max_pages,
                    max_resources=settings.fhir_max_resources_per_key,
                    page_size=min(settings.fhir_page_size, catalog.max_page_size),
                ),
                observe=lambda outcome, seconds: _observe_fhir(metrics, outcome, seconds),
            )
            authenticator = None
            if settings.auth is AuthMode.required:
                authenticator = ClientAuthenticator(
                    clients,
                    http,
                    trail.replay_cache,
                    leeway_seconds=settings.jwt_leeway_seconds,
                    max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
                    jwks_cache_seconds=settings.jwks_cache_seconds,
                    jwks_timeout_seconds=settings.jwks_timeout_seconds,
                )
            orchestrator = Orchestrator(
                settings,
                catalog,
                fhir,
                clock=clock,
                id_factory=id_factory,
                audit=trail.writer,
                metrics=metrics,
            )
            app.state.cds = AppState(
                settings, catalog, orchestrator, authenticator, http, trail, metrics, examples, artefacts
            )
            settle_memory()
            logger.info(
                "ready: %d services, %d rules (rules version %s), engine %s",
                len(catalog.services),
                len(catalog.rules),
                catalog.version,
                NATIVE.reason,
            )
            if NATIVE.stale:
                logger.warning("the compiled engine is not used: %s", NATIVE.reason)
            if NATIVE.active and settings.native is NativeMode.off:
                logger.warning(
                    "the settings say CDS_NATIVE=off, but the engine was loaded compiled before they were "
                    "read (a .env file is read too late): set CDS_NATIVE in the process environment"
                )
            yield

    app = FastAPI(
        title="Hip weakness CDS service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # api.docs serves /docs, /redoc and /openapi.json without a CDN
        redoc_url=None,
        openapi_url=None,
        openapi_tags=[
            {"name": "CDS Hooks", "description": "The CDS Hooks 2.0.1 endpoints EHRs call."},
            {"name": "Rules", "description": "Every rule and value set, for clinical safety review."},
            {
                "name": "FHIR",
                "description": "The rules and value sets as FHIR R4 knowledge artefacts (read-only, "
                "`application/fhir+json`): a PlanDefinition per CDS service, an ActivityDefinition per "
                "suggested order, a ValueSet per value set. They describe the rules; the service "
                "executes them.",
            },
            {"name": "Operations", "description": "Liveness, readiness and metrics for operators."},
            {
                "name": "Audit",
                "description": "What the service did and what clinicians did with it. Needs the audit token "
                "(*Authorize*), not the EHR's JWT.",
            },
        ],
    )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        hooks_by_service={s.id: s.hook for s in catalog.services},
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    errors.install(app)
    for router in (
        discovery.router,
        feedback.router,
        hooks.router,
        rules.router,
        rule_pages.router,
        fhir.router,
        explain.router,
        audit.router,
        ops.router,
    ):
        app.include_router(router)
    openapi_docs.install(app)
    docs.install(app)
    return app


class StartupError(RuntimeError):
    """The service must not start (production without its database)."""


async def _require_database(trail: AuditTrail) -> None:
    """Production fails fast when the database is unreachable at start-up (an outage later is survived)."""
    try:
        await asyncio.wait_for(trail.database.run(trail.database.ping), 10)
    except Exception as exc:
        raise StartupError(f"database unreachable at start-up ({trail.database.describe()})") from exc


async def _sync_audit_metrics(trail: AuditTrail, metrics: Metrics) -> None:
    """Every worker publishes its audit counters (backlog, failures, spool) every few seconds."""
    while True:
        metrics.record_audit(trail.counters())
        await asyncio.sleep(AUDIT_METRICS_SECONDS)


def _observe_fhir(metrics: Metrics, outcome: str, seconds: float) -> None:
    metrics.fhir_requests.labels(outcome).inc()
    metrics.fhir_duration.observe(seconds)


def _make_data_dir(settings: Settings) -> None:
    """The SQLite file and the audit spool live here; a missing or read-only one is logged, not fatal."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.error("data directory %s cannot be created: %s", settings.data_dir, exc.strerror or exc)


def settle_memory() -> None:
    """Keep the cyclic garbage collector off the latency path (docs/performance.md).

    ``gc.freeze()`` moves the ~50k start-up objects (FastAPI, pydantic, fhir.resources, rules) out of
    every future collection. Higher thresholds matter because each call parses a large prefetch (~10k
    containers for 210 KB) that stays alive while the call runs: with the defaults, concurrent calls'
    objects were rescanned by frequent older-generation collections (70-120 ms pauses at concurrency 50);
    with these, a full collection happens every few seconds at most. Cyclic garbage is still collected.
    Once per process: GC state is the process's, and freezing again (a test process builds hundreds of
    apps) would keep every later object out of collection for good.
    """
    if gc.get_threshold() == GC_THRESHOLDS:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
