"""Logging: one line per event, text by default or JSON (``CDS_LOG_FORMAT=json``), each line carrying the
request's correlation id (the hookInstance once the request is parsed, else a generated request id).

Modules log through ``logging.getLogger(__name__)`` with %-style arguments. What is logged is chosen at
the call sites to exclude PHI and secrets (no tokens, names, identifiers or patient ids).
"""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from cds_service.config import LogFormat, Settings

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="-")


class CorrelationFilter(logging.Filter):
    """Stamps every record with the current request's correlation id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per line (python-json-logger): time (ISO 8601, UTC), level, logger, correlation
    id, message, and the exception when there is one."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(correlation_id)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        timestamp="time",
        json_ensure_ascii=False,
    )


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the process: uvicorn applies it in every worker."""
    level = settings.log_level.upper()
    formatter = (
        {"()": "cds_service.logs.json_formatter"}
        if settings.log_format is LogFormat.json
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"correlation": {"()": "cds_service.logs.CorrelationFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["correlation"],
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # one line per Alembic plugin, per worker, at every start: noise, not information
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))


def quiet_http_clients() -> None:
    """httpx logs every request URL at INFO, and FHIR URLs carry patient ids (``?patient=...``)."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
