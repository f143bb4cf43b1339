"""The one strict pydantic base, and the one way a validation error becomes a line.

Every schema the project reads (configs, records, meta-responses, instruction sources)
refuses unknown keys, so a typo is an error instead of a silent default, and every
refusal reads the same: the first problem's dotted key, its reason, the count of others.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors; values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(Strict):
    """A config section: strict, and re-validated when a recipe assigns a field."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


def reason(e: ValidationError) -> str:
    """A pydantic error as one line: the first problem's dotted location and message, and the count of others."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        msg = "must be one line with visible text"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"
