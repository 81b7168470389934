"""FHIR access errors: one small tree, mapped from HTTP in one place (``fhir.client._raise_for``).

    FhirError                      anything that kept us from getting the data
    ├── FhirTransportError         connection refused, DNS, TLS
    │   └── FhirTimeout            connect/read timeout or the overall time budget ran out
    ├── FhirStatusError            the server answered with an error status
    │   ├── FhirAuthError          401, 403
    │   ├── FhirNotFound           404, 410
    │   ├── FhirBadRequest         400 (HAPI: unknown search parameter)
    │   ├── FhirRateLimited        429
    │   └── FhirServerError        5xx
    └── FhirInvalidResponse        not JSON, not FHIR, too large, paging loop or too many pages

Every error carries the server's OperationOutcome diagnostics (when it sent one) for the CLI and the
412 body; never the request's token.
"""

from __future__ import annotations


class FhirError(Exception):
    """Base class. ``diagnostics``: what the server said (OperationOutcome), safe to show."""

    def __init__(self, message: str, *, status: int | None = None, diagnostics: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.diagnostics = diagnostics

    def describe(self) -> str:
        parts = [str(self)]
        if self.diagnostics:
            parts.append(f"server said: {self.diagnostics}")
        return "; ".join(parts)


class FhirTransportError(FhirError):
    """The server could not be reached."""


class FhirTimeout(FhirTransportError):
    """A timeout, or the hook call's FHIR time budget ran out."""


class FhirStatusError(FhirError):
    """The server answered with an error status."""


class FhirAuthError(FhirStatusError):
    """401/403: the token is missing, expired or lacks the scope."""


class FhirNotFound(FhirStatusError):
    """404/410: unknown resource, type or id (or gone)."""


class FhirBadRequest(FhirStatusError):
    """400: e.g. HAPI rejects an unknown search parameter (other servers ignore it)."""


class FhirRateLimited(FhirStatusError):
    """429: too many requests."""


class FhirServerError(FhirStatusError):
    """5xx."""


class FhirInvalidResponse(FhirError):
    """The answer is not usable FHIR JSON: malformed, wrong type, too large, or endless paging."""


def error_for_status(status: int, diagnostics: str | None) -> FhirStatusError:
    """The one place that maps an HTTP status to our error types."""
    kinds: dict[int, type[FhirStatusError]] = {
        400: FhirBadRequest,
        401: FhirAuthError,
        403: FhirAuthError,
        404: FhirNotFound,
        410: FhirNotFound,
        429: FhirRateLimited,
    }
    kind = kinds.get(status, FhirServerError if status >= 500 else FhirStatusError)
    return kind(f"FHIR server answered HTTP {status}", status=status, diagnostics=diagnostics)
