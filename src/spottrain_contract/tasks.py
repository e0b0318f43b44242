"""Training tasks by name: what a stage trains. The one table both halves read.

A task is a pydantic options model (torch-free, so the launcher validates recipes without torch) and an
implementation the trainer builds on the nodes; the table names both as `module:attribute` strings, so the
contract imports no trainer code. Adding a task is its options model, its trainer module and one line here (or
an entry point in the `spottrain.tasks` group naming a `TaskSpec`, from another package).

`recipe_model(task)` is the recipe schema for one task: the task's options sit beside the common `train` keys,
and a section another task owns is an unknown key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, create_model

from spottrain_contract.plugins import PluginTable, load_object
from spottrain_contract.schema import Recipe, Train


@dataclass(frozen=True)
class TaskSpec:
    options: str  # module:Class of the options model, merged into `train`
    implementation: str  # module:callable(train settings, ranks) -> the trainer's Task


TASKS: PluginTable[TaskSpec] = PluginTable("task", "spottrain.tasks", {
    "baseline": TaskSpec("spottrain_contract.wmtp:BaselineStage", "spottrain.tasks.wmtp.baseline:BaselineTask"),
    "critic": TaskSpec("spottrain_contract.wmtp:CriticStage", "spottrain.tasks.wmtp.critic:CriticTask"),
    "verifiable": TaskSpec("spottrain_contract.wmtp:VerifiableStage", "spottrain.tasks.wmtp.verifiable:VerifiableTask"),
    "rho1": TaskSpec("spottrain_contract.wmtp:Rho1Stage", "spottrain.tasks.wmtp.rho1:Rho1Task"),
    "pairwise_ranking": TaskSpec("spottrain_contract.ranking:PairwiseRankingStage",
                                 "spottrain.tasks.ranking.task:PairwiseRankingTask"),
    "vlm_lora": TaskSpec("spottrain_contract.vlm:VlmLoraStage", "spottrain.tasks.vlm.task:VlmLoraTask"),
})


def options_model(task: str) -> type[BaseModel]:
    return load_object(TASKS.get(task).options)


@lru_cache(maxsize=None)
def recipe_model(task: str) -> type[Recipe]:
    """The Recipe model whose `train` holds the common settings plus the task's options."""
    options = options_model(task)
    clash = sorted(set(options.model_fields) & set(Train.model_fields))
    if clash:
        raise TypeError(f"task {task}: options model {options.__name__} redefines common train keys: {clash}")
    train = create_model(f"{options.__name__}Train", __base__=(Train, options))
    train.__doc__ = f"{Train.__doc__}\n\n{options.__doc__ or ''}".strip()
    return create_model(f"{options.__name__}Recipe", __base__=Recipe, train=(train, ...))
