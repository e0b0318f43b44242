"""Stage inputs: a task option that names another stage's trained weights (the verifiable stage starts from the
critic's best checkpoint). A task declares one with `stage_input(...)` in its options model; the launcher finds
every such option a recipe leaves unset and resolves it the same way for every task (`launcher.stages`), so no
task's needs are written into the launcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

STAGE_INPUT = "stage_input"  # the json_schema_extra entry: the sibling option naming the producing recipe


def stage_input(*, stage_option: str, description: str) -> Any:
    """An optional checkpoint URI of the best checkpoint of a run of the recipe that the sibling option
    `stage_option` names; left unset, the launcher looks it up at launch."""
    return Field(None, description=description, json_schema_extra={STAGE_INPUT: stage_option})


@dataclass(frozen=True)
class StageInput:
    key: str  # the dotted override that sets it: train.verifiable.critic_checkpoint
    stage: str  # the recipe whose run produces it: critic


def unset_stage_inputs(model: BaseModel, prefix: str = "train") -> list[StageInput]:
    """Every stage input in `model` (nested sections included) that is still unset."""
    found = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if STAGE_INPUT in extra and value is None:
            found.append(StageInput(f"{prefix}.{name}", getattr(model, extra[STAGE_INPUT])))
        elif isinstance(value, BaseModel):
            found += unset_stage_inputs(value, f"{prefix}.{name}")
    return found
