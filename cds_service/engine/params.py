"""The parameters of each fact, as pydantic models: a rule file's leaf is validated against its fact's
model at start-up, so a misspelt window or an unknown value set stops the service with the file named.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cds_service.engine.model import Regex


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelativeWindow(Params):
    """Finding date minus weakness onset, in days: ``from_days <= delta <= to_days``."""

    from_days: int | None = None
    to_days: int | None = None


class WindowParams(Params):
    valueset: str | list[str]
    within_days: int | None = Field(None, ge=0, description="Dated within the last N days.")
    relative_to_weakness: RelativeWindow | None = None
    combine: Literal["all", "any"] = Field("all", description="How the two windows combine.")

    @property
    def valuesets(self) -> list[str]:
        return [self.valueset] if isinstance(self.valueset, str) else list(self.valueset)

    @property
    def windowed(self) -> bool:
        return self.within_days is not None or self.relative_to_weakness is not None


class FindingParams(WindowParams):
    status: Literal["current", "any-clinical"] = "current"
    resource_types: list[Literal["Condition", "Observation"]] = ["Condition", "Observation"]
    severity: str | None = Field(None, description="Condition.severity must be in this value set.")
    not_severity: str | None = Field(None, description="Condition.severity must not be in this value set.")
    or_recorded: bool = Field(
        False, description="A Condition also counts when its recordedDate is in the window."
    )
    bilateral: bool = Field(
        False, description="Findings on both sides are required (left and right, or bilateral)."
    )
    site_matches: list[Regex] | None = Field(
        None,
        description="Patterns (regular expressions), one of which the finding's bodySite text or display "
        "must contain: a non-specific code counts only at this site (codes.md: R20.0 at a saddle site).",
    )
    text_matches: list[Regex] | None = Field(
        None,
        description="Patterns (regular expressions), one of which the finding's free text (code.text, notes) "
        "must contain, not negated. Escalation only (knowledge §5.4 M-STR-3); never for red flags.",
    )


class CodedValueParams(WindowParams):
    answers: str = Field(description="Value set of valueCodeableConcept answers that count.")


class ScoreParams(WindowParams):
    per_side: bool = True
    episode_max: float | None = Field(
        None, description="Earlier values up to this belong to the same episode (weakness onset)."
    )


class QuantityParams(WindowParams):
    aggregate: Literal["max", "min", "latest"]


class MedicationParams(Params):
    valueset: str
    ended_within_days: int = Field(ge=0, description="Completed/stopped medication still counts this long.")


class RuleParams(Params):
    rules: list[str] | None = None
    pathways: list[str] | None = None
    with_evidence: bool = Field(
        False, description="Show the findings behind the rules that fired (e.g. which red flag) on the card."
    )

    @model_validator(mode="after")
    def _one_of(self) -> RuleParams:
        if not (self.rules or self.pathways):
            raise ValueError("give rules or pathways")
        return self


class DraftOrderParams(Params):
    valueset: str
    selected_only: bool = Field(False, description="order-select: only the newly selected orders.")


class NoParams(Params):
    pass
