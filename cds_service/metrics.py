"""Prometheus metrics (prometheus-client), correct with several uvicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``cds-service serve`` sets it, and empties it, before the workers
start), every worker writes its samples to files there and ``/metrics`` sums them across workers
(the library's multiprocess mode). Without it (tests, a single process) each app has its own registry.

Labels only take bounded values: service ids, hook names, HTTP statuses, category codes, indicators,
prefetch key names, error classes and authentication failure reasons. Never a patient, token or URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AUDIT_GAUGES = ("backlog", "queued")
AUDIT_COUNTERS = ("written", "failed", "spooled", "replayed", "dropped", "lost", "rejected")


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metrics. One instance per app; label values are checked by the callers."""

    def __init__(self) -> None:
        # In multiprocess mode samples go to files whatever the registry; a private registry avoids
        # duplicate registration when a process builds several apps (tests).
        self.registry = CollectorRegistry()
        r = self.registry
        self.hook_calls = Counter(
            "cds_hook_calls",
            "Hook calls answered, by service, hook and HTTP status.",
            ["service", "hook", "status"],
            registry=r,
        )
        self.hook_duration = Histogram(
            "cds_hook_duration_seconds",
            "Time to answer a hook call.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cards = Counter(
            "cds_cards", "Cards returned, by category and indicator.", ["category", "indicator"], registry=r
        )
        self.prefetch_keys = Counter(
            "cds_prefetch_keys",
            "Prefetch keys by how they were obtained (supplied, fetched, null, failed).",
            ["key", "status"],
            registry=r,
        )
        self.fhir_requests = Counter(
            "cds_fhir_requests",
            "Requests to EHR FHIR servers, by outcome (ok or error class).",
            ["outcome"],
            registry=r,
        )
        self.fhir_duration = Histogram(
            "cds_fhir_request_duration_seconds",
            "Duration of one FHIR request.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "cds_auth_failures", "Rejected CDS client tokens, by reason.", ["reason"], registry=r
        )
        self.feedback = Counter(
            "cds_feedback_entries", "Feedback entries received, by outcome.", ["outcome"], registry=r
        )
        self.audit_events = Counter(
            "cds_audit_records",
            "Audit records by what happened to them (written, failed, spooled, ...).",
            ["event"],
            registry=r,
        )
        self.audit_state = Gauge(
            "cds_audit",
            "Audit backlog (spooled, not yet written) and queue, summed over live workers.",
            ["measure"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.audit_store_available = Gauge(
            "cds_audit_store_available",
            "1 when the audit database is reachable (minimum over workers).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self._audit_seen: dict[str, int] = {}

    def record_audit(self, counters: Mapping[str, int | bool]) -> None:
        """Sync the audit writer's cumulative counters into metrics (called periodically per worker)."""
        for name in AUDIT_GAUGES:
            self.audit_state.labels(name).set(int(counters.get(name, 0)))
        self.audit_store_available.set(1 if counters.get("store_available", True) else 0)
        for name in AUDIT_COUNTERS:
            value = int(counters.get(name, 0))
            delta = value - self._audit_seen.get(name, 0)
            if delta > 0:
                self.audit_events.labels(name).inc(delta)
            self._audit_seen[name] = value

    def record_feedback(self, outcomes: Iterable[str]) -> None:
        for outcome in outcomes:
            self.feedback.labels(outcome if outcome in ("accepted", "overridden") else "other").inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition: summed over workers in multiprocess mode."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def prepare_multiprocess_dir(path: str) -> None:
    """Before the workers start: an empty directory for this run's sample files."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    os.environ[MULTIPROC_ENV] = path


def forget_dead_workers() -> None:
    """At a worker's start: drop the live gauges of workers that are gone (uvicorn restarts workers and
    has no exit hook), so backlog and availability are summed over live processes only. Counters and
    histograms of dead workers stay in the sums, as they should."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or not os.path.isdir(path):
        return
    for name in os.listdir(path):
        match = re.match(r"^gauge_live\w+?_(\d+)\.db$", name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
