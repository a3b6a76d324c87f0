"""rules.yaml's schema (pydantic): what an operator's copy may say. Read by
engine.core.rules.load_rules only, so that the processes that are given the
Rules (the loader's workers) never import pydantic."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from engine.core.rules import _day


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        """A key left empty (`overrides:` with only a comment) takes its default."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in _EMPTY_OK}
        return data


_EMPTY_OK = {"text", "json", "dangling_references", "overrides", "sensitive_fields", "dates"}
FieldName = Annotated[str, StringConstraints(pattern=r"^[^.\s]+\.[^\s]+$")]


class TextRules(_Section):
    nul_characters: Literal["strip", "quarantine"] = "strip"


class JsonRules(_Section):
    non_finite_numbers: Literal["null", "quarantine"] = "null"


class DanglingRules(_Section):
    overrides: dict[str, Literal["set_null", "quarantine"]] = Field(default_factory=dict)


class DateRules(_Section):
    plausible_from: dt.date | None = None
    plausible_until: dt.date | None = None
    implausible: Literal["count", "quarantine"] = "count"

    @model_validator(mode="after")
    def _ordered(self) -> DateRules:
        if self.plausible_from and self.plausible_until and \
                _day(self.plausible_from) > _day(self.plausible_until):
            raise ValueError(f"plausible_from ({self.plausible_from}) is after "
                             f"plausible_until ({self.plausible_until})")
        return self


class RulesFile(_Section):
    text: TextRules = TextRules()
    json_rules: JsonRules = Field(default=JsonRules(), alias="json")
    dangling_references: DanglingRules = DanglingRules()
    batch_size: int = Field(default=5000, gt=0, strict=True)
    sensitive_fields: list[FieldName] = Field(default_factory=list)
    dates: DateRules = DateRules()
