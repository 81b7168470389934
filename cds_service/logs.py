"""Logging set-up: one line per event, text by default or JSON (``CDS_LOG_FORMAT=json``).

Modules log through ``logging.getLogger(__name__)`` with %-style arguments. What is logged is chosen at
the call sites to exclude PHI and secrets (no tokens, names, identifiers or patient ids).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from cds_service.config import LogFormat, Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("correlation_id",):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    quiet_http_clients()


def quiet_http_clients() -> None:
    """httpx logs every request URL at INFO, and FHIR URLs carry patient ids (``?patient=...``)."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
