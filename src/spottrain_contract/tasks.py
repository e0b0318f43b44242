"""Training tasks by name: what a stage trains. The one table both halves read.

A task is a pydantic options model (torch-free, so the launcher validates recipes without torch) and an
implementation the trainer builds on the nodes; the table names both as `module:attribute` strings, so the
contract imports no trainer code. Adding a task is its options model, its trainer module and one line here (or
an entry point in the `spottrain.tasks` group naming a `TaskSpec`, from another package).

`recipe_model(task)` is the recipe schema for one task: the task's options sit beside the common `train` keys,
and a section another task owns is an unknown key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

from pydantic import BaseModel, Field, create_model

from spottrain_contract.errors import UserError
from spottrain_contract.plugins import PluginTable, load_object
from spottrain_contract.schema import Recipe, Train


@dataclass(frozen=True)
class JobOption:
    """An option of the task's `launch eval`/`launch predict` jobs (`--option NAME=VALUE`): it sets one setting
    of the run's recipe for the job, so the task's own model validates it like any override."""

    name: str  # what the user writes: csv
    key: str  # the dotted setting it sets: train.data.test_csv
    description: str
    path: bool = False  # a file the job reads: made absolute for a job here


@dataclass(frozen=True)
class TaskSpec:
    options: str = ""  # module:Class of the options model, merged into `train`
    implementation: str = ""  # module:callable(train settings, ranks) -> the trainer's Task
    job_options: tuple[JobOption, ...] = ()  # what its eval/predict jobs take beyond the run's settings
    recipe: str = ""  # module:Class of a whole recipe model of its own (the command task: not the trainer's)


VLM_JOB_OPTIONS = (
    JobOption("csv", "train.data.test_csv", "Judge on this CSV (url, query, annotation) instead of the run's test "
                                            "CSV (a path where the job runs).", path=True),
    JobOption("prompt_template", "train.evaluation.prompt_template", "The user turn, with {query}."),
    JobOption("system_message", "train.evaluation.system_message", "A system turn before it."),
    JobOption("batch_size", "train.evaluation.batch_size", "Prompts per generate()."),
    JobOption("max_new_tokens", "train.evaluation.generation.max_new_tokens", "Tokens generated at most."),
    JobOption("model_id", "train.model.id", "The base model (hub id or path), e.g. of an adapter from anywhere."),
    JobOption("model_type", "train.model.type", "Its family (llava, qwen2_vl, qwen2_5_vl, blip2, …)."),
)

RANKER_JOB_OPTIONS = (
    JobOption("labels", "train.data.test_metadata", "Judge on this labelled CSV (image_id, filename, tier) instead "
                                                    "of the run's stored test split: every pair of its images of "
                                                    "different tiers (a path where the job runs).", path=True),
    JobOption("labels_images", "train.data.test_image_dir", "The directory of the labels' files (default: the "
                                                            "CSV's own).", path=True),
)


TASKS: PluginTable[TaskSpec] = PluginTable("task", "spottrain.tasks", {
    "baseline": TaskSpec("spottrain_contract.wmtp:BaselineStage", "spottrain.tasks.wmtp.baseline:BaselineTask"),
    "critic": TaskSpec("spottrain_contract.wmtp:CriticStage", "spottrain.tasks.wmtp.critic:CriticTask"),
    "verifiable": TaskSpec("spottrain_contract.wmtp:VerifiableStage", "spottrain.tasks.wmtp.verifiable:VerifiableTask"),
    "rho1": TaskSpec("spottrain_contract.wmtp:Rho1Stage", "spottrain.tasks.wmtp.rho1:Rho1Task"),
    "pairwise_ranking": TaskSpec("spottrain_contract.ranking:PairwiseRankingStage",
                                 "spottrain.tasks.ranking.task:PairwiseRankingTask", job_options=RANKER_JOB_OPTIONS),
    "vlm_lora": TaskSpec("spottrain_contract.vlm:VlmLoraStage", "spottrain.tasks.vlm.task:VlmLoraTask",
                         job_options=VLM_JOB_OPTIONS),
    "command": TaskSpec(recipe="spottrain_contract.command:CommandRecipe"),  # a team's own script
})


def job_option_overrides(task: str, options: Mapping[str, Any], absolute: Callable[[str, str], str]) -> list[str]:
    """The overrides a job's `--option NAME=VALUE`s make (`absolute(name, path)`: what a path option becomes where
    the job runs). Values are JSON: override values are typed as YAML, where "Question: {query}" would be a mapping. An
    option the task does not declare is a one-line error naming those it does."""
    declared = {option.name: option for option in TASKS.get(task).job_options}
    overrides = []
    for name, value in options.items():
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise UserError(f"--option {name}: not an option of task {task}'s jobs (its options: {known})")
        option = declared[name]
        overrides.append(f"{option.key}={json.dumps(absolute(name, value) if option.path else value)}")
    return overrides


def options_model(task: str) -> type[BaseModel]:
    return load_object(TASKS.get(task).options)


@lru_cache(maxsize=None)
def recipe_model(task: str) -> type[Recipe]:
    """The Recipe model whose `train` holds the common settings plus the task's options (or the task's own recipe
    model: the command task's)."""
    spec = TASKS.get(task)
    if spec.recipe:
        return load_object(spec.recipe)
    options = options_model(task)
    clash = sorted(set(options.model_fields) & set(Train.model_fields))
    if clash:
        raise TypeError(f"task {task}: options model {options.__name__} redefines common train keys: {clash}")
    train = create_model(f"{options.__name__}Train", __base__=(Train, options))
    train.__doc__ = f"{Train.__doc__}\n\n{options.__doc__ or ''}".strip()
    described = Field(..., description=Recipe.model_fields["train"].description)  # the task's train, documented
    return create_model(f"{options.__name__}Recipe", __base__=Recipe, train=(train, described))
