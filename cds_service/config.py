"""Settings: one pydantic-settings object, read from ``CDS_*`` environment variables and injected.

There is no module-level instance. ``create_app(settings)`` receives one (tests build their own) and
routes reach it through ``api.deps.SettingsDep``. Defaults are the *production* defaults (authentication
required, no unauthenticated FHIR access); ``make run`` switches to ``CDS_ENV=development``.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    """Where the service runs; production refuses unsafe settings at start-up."""

    production = "production"
    development = "development"
    test = "test"


class AuthMode(StrEnum):
    """``required``: every EHR call carries a verified JWT. ``off``: local development only."""

    required = "required"
    off = "off"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class NativeMode(StrEnum):
    auto = "auto"
    off = "off"


class Settings(BaseSettings):
    """Every tunable of the service. The field description is the documentation (see docs/deployment.md)."""

    model_config = SettingsConfigDict(env_prefix="CDS_", env_file=".env", extra="ignore", frozen=True)

    env: Environment = Field(Environment.production, description="production | development | test.")
    public_base_url: str | None = Field(
        None,
        description="External base URL (e.g. https://cds.example.org). Used for the JWT `aud` check and for "
        "absolute links on cards and in the `/fhir` artefacts (service endpoint, rule pages; relative "
        "when unset). Required in production, and https there: derived from the request's "
        "Host header, `aud` could be made to match a token issued to another service. Unset outside "
        "production: derived from the incoming request.",
        pattern=r"^(?i:https?)://[^/?#\s]+(/[^?#\s]*)?$",
    )

    # --- EHR authentication (CDS Hooks JWT) ---
    auth: AuthMode = Field(AuthMode.required, description="required | off.")
    trusted_clients_file: Path | None = Field(
        None, description="JSON file listing trusted CDS clients: [{iss, jwks | jwks_url, ...}]."
    )
    jwt_leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew tolerated on exp/iat/nbf.")
    jwt_max_lifetime_seconds: int = Field(
        3600, ge=60, description="Tokens whose exp - iat exceeds this are refused (bounds the jti cache)."
    )
    jwks_cache_seconds: int = Field(3600, ge=10, description="How long a fetched JWK Set is trusted.")
    jwks_timeout_seconds: float = Field(2.0, gt=0, description="Timeout for fetching a client's JWK Set.")

    # --- FHIR access (missing prefetch) ---
    fhir_time_budget_seconds: float = Field(
        4.0, gt=0, le=60, description="Total time allowed to fetch all missing prefetch for one hook call."
    )
    fhir_connect_timeout_seconds: float = Field(1.5, gt=0, description="TCP/TLS connect timeout.")
    fhir_max_pages: int = Field(20, ge=1, description="Pages followed per prefetch key (link[next]).")
    fhir_page_size: int = Field(500, ge=1, le=5000, description="_count added to searches the service runs.")
    fhir_max_response_bytes: int = Field(25_000_000, ge=1024, description="Largest FHIR response accepted.")
    fhir_max_resources_per_key: int = Field(50_000, ge=1, description="Resources accepted per prefetch key.")
    allow_unauthenticated_fhir: bool | None = Field(
        None,
        description="Fetch from a fhirServer sent without fhirAuthorization (sandbox, open test servers). "
        "Unset: allowed outside production.",
    )

    # --- Request limits ---
    max_request_bytes: int = Field(
        20_000_000, ge=1024, description="Largest hook request body; larger gets 413."
    )
    max_concurrent_hook_calls: int = Field(
        32, ge=1, description="Hook calls evaluated at once per worker; excess calls wait in a queue."
    )

    # --- Rules ---
    rules_dir: Path = Field(PROJECT_ROOT / "rules", description="Shipped rules and value sets.")
    ehr_profile: str = Field(
        "generic",
        description="How the EHR's FHIR server is queried: generic (spec-conformant: HAPI, SMART), epic or "
        "oracle (rules/ehr-profiles.yaml). Discovery publishes that profile's prefetch templates and the "
        "service's own fetches run the same queries.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{0,63}$",
    )
    extra_valuesets_dir: Path | None = Field(
        None, description="Site-specific codes added to the shipped value sets (YAML files, same format)."
    )

    # --- Storage and audit ---
    data_dir: Path = Field(PROJECT_ROOT / "var", description="Embedded SQLite database and audit spool.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (postgresql+psycopg://...). Unset: SQLite file in data_dir."
    )
    audit_token: SecretStr | None = Field(
        None, description="Bearer token for the audit and explain endpoints (required in production)."
    )
    patient_hash_secret: SecretStr | None = Field(
        None, description="HMAC key for patient pseudonyms in the audit trail (required in production)."
    )
    database_connect_timeout_seconds: float = Field(
        3.0, gt=0, le=60, description="Connecting to the database gives up after this (PostgreSQL)."
    )
    database_lock_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=120,
        description="A statement waiting for a lock gives up after this (SQLite busy timeout, PostgreSQL "
        "lock_timeout); the write is then retried (audit) or answered 503 (feedback).",
    )
    migrate_on_start: bool = Field(
        True, description="Apply database migrations at start-up (else run `cds-service migrate` first)."
    )
    audit_queue_max: int = Field(
        10_000,
        ge=1,
        description="Hook-call records waiting in memory for the audit writer; beyond it they are dropped, "
        "counted and logged.",
    )
    audit_batch_size: int = Field(200, ge=1, le=10_000, description="Records written per transaction.")
    audit_retry_seconds: float = Field(
        5.0, gt=0, le=3600, description="While the audit store is down: time between reconnection attempts."
    )
    audit_spool_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=4096,
        description="Size limit of this process's audit spool file (records kept on disk while the store is "
        "down). Beyond it records are dropped, counted and logged.",
    )
    audit_shutdown_seconds: float = Field(
        5.0,
        ge=0,
        le=120,
        description="At shutdown, time allowed to write queued records to the store; the rest is spooled.",
    )
    audit_store_user_comments: bool = Field(
        False,
        description="Store the free-text `userComment` of feedback. Off: only whether there was one is "
        "stored, because free text can name the patient.",
    )
    feedback_max_items: int = Field(1000, ge=1, description="Feedback entries accepted in one request.")
    explain_fhir_servers: list[str] = Field(
        default_factory=list,
        description="FHIR server URL prefixes the explain endpoint may fetch missing prefetch from. Empty: "
        "explain evaluates only the data sent in the body (fhirServer/fhirAuthorization are ignored).",
    )

    # --- Operations ---
    keep_alive_seconds: float = Field(
        75.0,
        gt=0,
        le=3600,
        description="Idle keep-alive before the server closes a connection; longer than the load balancer's "
        "idle timeout, so the balancer never reuses a connection the server is closing.",
    )
    native: NativeMode = Field(
        NativeMode.auto,
        description="auto: run the engine compiled (mypyc) when `make` built it from this very source, "
        "else interpreted. off: always interpreted. Read from the process environment when the package "
        "is imported (cds_service/native.py), so a `.env` file sets it too late; the start-up log says "
        "which engine runs.",
    )
    shutdown_grace_seconds: float = Field(
        15.0, gt=0, le=300, description="On SIGTERM: how long in-flight calls may finish before workers stop."
    )
    ready_max_audit_backlog: int = Field(
        10_000, ge=0, description="/readyz fails when more audit records than this wait in the spool."
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token required by /metrics (unset: open; restrict it at the network)."
    )
    log_format: LogFormat = Field(LogFormat.text, description="text | json (one JSON object per line).")
    log_level: str = Field("INFO", description="Python logging level.")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed by CORS (browser clients: sandbox)."
    )

    @property
    def fhir_without_token_allowed(self) -> bool:
        if self.allow_unauthenticated_fhir is not None:
            return self.allow_unauthenticated_fhir
        return self.env is not Environment.production

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cds.sqlite3'}"

    @field_validator("public_base_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``CDS_PUBLIC_BASE_URL=`` (empty) means unset, as it did before the URL was validated."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.env is Environment.production:
            problems = []
            if self.auth is AuthMode.off:
                problems.append("CDS_AUTH=off is not allowed in production")
            if self.auth is AuthMode.required and self.trusted_clients_file is None:
                problems.append("CDS_TRUSTED_CLIENTS_FILE is required when CDS_AUTH=required")
            if self.audit_token is None:
                problems.append("CDS_AUDIT_TOKEN is required in production")
            if self.patient_hash_secret is None:
                problems.append("CDS_PATIENT_HASH_SECRET is required in production")
            if not (self.public_base_url or "").lower().startswith("https://"):
                problems.append("CDS_PUBLIC_BASE_URL (https://...) is required in production")
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def with_local_secrets(self) -> Settings:
        """Development only: fill the audit token and hash key with random values when unset."""
        updates: dict[str, object] = {}
        if self.audit_token is None:
            updates["audit_token"] = SecretStr(secrets.token_urlsafe(24))
        if self.patient_hash_secret is None:
            updates["patient_hash_secret"] = SecretStr(secrets.token_urlsafe(32))
        return self.model_copy(update=updates) if updates else self
