"""CDS Hooks 2.0.1 wire types (pydantic), with the spec's invariants as validators.

Responses are dumped with ``exclude_none`` and never carry empty optional arrays: the spec forbids
``null`` and empty members (``cards: []`` is the one exception). Requests are read leniently where real
clients differ from the spec (Epic, the sandbox) and strictly where the spec is unambiguous.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

_Model = TypeVar("_Model", bound=BaseModel)


class InvalidInput(ValueError):
    """The caller's input failed validation (answered 400, naming each field under ``prefix``).

    Request data is validated through :func:`parse_input` so that only *input* errors become 400s: a
    ``ValidationError`` raised anywhere else (our own response models refusing what we built) is a bug in
    the service and is answered 500 and logged, never blamed on the EHR.
    """

    def __init__(self, error: ValidationError, prefix: str = "") -> None:
        super().__init__(str(error))
        self.error = error
        self.prefix = prefix


class MalformedJson(ValueError):
    """The body is not a JSON object, or a repeated member would drop FHIR data (HTTP 400)."""


def json_object(raw: bytes) -> dict[str, Any]:
    """The body parsed with orjson, which must give a JSON object (else ``MalformedJson``)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise MalformedJson("body must be a JSON object")
    return data


def parse_input(model: type[_Model], data: Any, prefix: str = "") -> _Model:
    """``model.model_validate(data)``, raising :class:`InvalidInput` when the caller's data is invalid."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(exc, prefix) from exc


REFERENCE_PATTERN = r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$"
"""``Type/id`` as in the CDS Hooks Library invariant ``ord-1``."""

NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
FHIR_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
FHIR_ID = re.compile(FHIR_ID_PATTERN)
FhirId = Annotated[str, StringConstraints(pattern=FHIR_ID_PATTERN)]
Reference = Annotated[str, StringConstraints(pattern=REFERENCE_PATTERN)]


def _absolute_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an absolute http(s) URL")
    return value


AbsoluteUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_absolute_url)]


class WireModel(BaseModel):
    """Base for what we send: immutable, no unknown members, camelCase exactly as the spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


# ---------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------


class ServiceDescriptor(WireModel):
    hook: NonEmpty
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")]
    title: NonEmpty
    description: NonEmpty
    prefetch: dict[str, NonEmpty] | None = None
    usageRequirements: NonEmpty | None = None
    version: str | None = Field(None, description="CDS Hooks specification version implemented (3.0 field).")
    hookVersion: str | None = None


class DiscoveryResponse(WireModel):
    services: list[ServiceDescriptor]


# ---------------------------------------------------------------------------------------------------
# Hook request
# ---------------------------------------------------------------------------------------------------


class FhirAuthorization(BaseModel):
    """OAuth2 token for ``fhirServer``. The token is a secret: never logged, stored or echoed."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)

    access_token: SecretStr = Field(min_length=1)
    token_type: str = Field("Bearer", description="Always `Bearer`.")
    expires_in: int | None = Field(None, ge=0)
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("token_type must be 'Bearer'")
        return "Bearer"


class HookRequest(BaseModel):
    """The envelope of ``POST /cds-services/{id}``. ``context`` is checked per hook after this parse."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    hook: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    hookInstance: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    fhirServer: AbsoluteUrl | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirServer is required when fhirAuthorization is present (cds-r-1)")
        return self


class PatientViewContext(BaseModel):
    """``patient-view`` 1.0 context (CDS Hooks Library)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    userId: Reference
    patientId: FhirId
    encounterId: FhirId | None = None


class OrderSignContext(PatientViewContext):
    """``order-sign`` 1.0 context: ``draftOrders`` is a FHIR Bundle of draft requests."""

    draftOrders: dict[str, Any]

    @field_validator("draftOrders")
    @classmethod
    def _bundle(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        if not isinstance(value.get("entry", []), list):
            raise ValueError("draftOrders.entry must be an array")
        return value


class OrderSelectContext(OrderSignContext):
    """``order-select`` 1.0 context: ``selections`` names the newly selected entries of ``draftOrders``."""

    selections: list[Reference] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------------


class Indicator(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class Coding(WireModel):
    system: NonEmpty
    code: NonEmpty
    display: str | None = None


class OverrideReason(Coding):
    display: NonEmpty  # cds-resp-4: override reasons MUST carry a display


class Source(WireModel):
    label: NonEmpty
    url: AbsoluteUrl | None = None
    icon: AbsoluteUrl | None = None
    topic: Coding | None = None


class Action(WireModel):
    type: Literal["create", "update", "delete"]
    description: NonEmpty
    resource: dict[str, Any] | None = None
    resourceId: Reference | None = None

    @model_validator(mode="after")
    def _per_type(self) -> Action:
        if self.type in ("create", "update") and self.resource is None:
            raise ValueError(f"a {self.type} action carries the resource")
        if self.type == "delete" and self.resourceId is None:
            raise ValueError("a delete action carries resourceId (cds-resp-2)")
        return self


class Suggestion(WireModel):
    label: NonEmpty
    uuid: str
    isRecommended: bool | None = None
    actions: list[Action] | None = Field(None, min_length=1, max_length=1)  # Epic: one action each


class Link(WireModel):
    label: NonEmpty
    url: AbsoluteUrl
    type: Literal["absolute", "smart"]
    appContext: str | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_on_smart(self) -> Link:
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on smart links (cds-resp-3)")
        return self


class Card(WireModel):
    uuid: str
    summary: Annotated[str, StringConstraints(min_length=1, max_length=139)]
    detail: str | None = Field(None, min_length=1)
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] | None = Field(None, min_length=1)
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[OverrideReason] | None = Field(None, min_length=1)
    links: list[Link] | None = Field(None, min_length=1)
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _selection_behavior(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required with suggestions (cds-resp-6)")
        recommended = sum(1 for s in self.suggestions or [] if s.isRecommended)
        if self.selectionBehavior == "at-most-one" and recommended > 1:
            raise ValueError("at most one recommended suggestion with at-most-one (cds-resp-1)")
        return self


class CdsResponse(WireModel):
    cards: list[Card]
    systemActions: list[Action] | None = Field(None, min_length=1)


# ---------------------------------------------------------------------------------------------------
# Errors: FHIR OperationOutcome (CDS Hooks 3.0 recommends it on every non-2xx)
# ---------------------------------------------------------------------------------------------------


class OutcomeIssue(WireModel):
    severity: Literal["fatal", "error", "warning", "information"]
    code: NonEmpty
    diagnostics: str | None = None
    expression: list[str] | None = Field(None, min_length=1)


class OperationOutcome(WireModel):
    resourceType: Literal["OperationOutcome"] = "OperationOutcome"
    issue: list[OutcomeIssue] = Field(min_length=1)
