"""A recipe's `register:`: the model registry version a finished run becomes (`launch register` does the same by
hand). Here so that the recipe model validates it; the launcher registers (`launcher.model_registry`)."""

from __future__ import annotations

import re
from typing import Annotated, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # no '/', '@' or ':': it must read back out of models:/
ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")  # MLflow's alias rule, less its reserved `latest` and `vN`
CHECKPOINT = re.compile(r"^(best|final|\d+)$")


def _matching(pattern: re.Pattern, expected: str):
    def check(value: str) -> str:
        if not pattern.match(value) or value == "latest" or re.fullmatch(r"v\d+", value):
            raise ValueError(f"expected {expected}, got {value!r}")
        return value

    return AfterValidator(check)


ModelName = Annotated[str, _matching(MODEL_NAME, "letters, digits, '.', '_' or '-' (a registered model name)")]
Alias = Annotated[str, _matching(ALIAS, "an alias of letters, digits, '_' or '-' (not latest or vN)")]
CheckpointChoice = Annotated[str, _matching(CHECKPOINT, "best, final or a step number")]


class Registration(BaseModel):
    """Which checkpoint of a finished run goes into the MLflow Model Registry, under which name and alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ModelName = Field(description="The registered model (created on first use); each registration adds a "
                                        "version.")
    alias: Optional[Alias] = Field(None, description="An alias moved to the new version, e.g. champion "
                                                     "(models:/NAME@champion).")
    checkpoint: CheckpointChoice = Field("final", description="final (the final-hf/ export), best (BEST.json's "
                                                              "step) or a complete step number.")
