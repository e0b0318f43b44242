"""Jobs that use a run's trained weights: `launch eval RUN` (the task's test metrics) and `launch predict RUN
INPUT...`. Each is a job like a training run, on any target and in the registry under its own id
(`<run>-eval-<hex>`), running `python -m spottrain eval|predict --run-id RUN` on one GPU with the settings the
run was launched with (its profile and overrides, read from the registry).
"""

from __future__ import annotations

import dataclasses
import json
import secrets as _random
from pathlib import Path
from typing import Optional, Sequence

from launcher import runner
from launcher.plan import LaunchPlan, code_version, plan_launch
from launcher.registry import Registry
from launcher.targets import get_target
from spottrain_contract.errors import UserError


def trained_on(project_dir: Path, run_id: str, verb: str) -> str:
    """The target the run trained on (the default place to use its weights)."""
    registry = Registry(project_dir)
    if not registry.exists(run_id):
        raise UserError(f"run {run_id} is not in this project's registry (launch status lists them): {verb} "
                        f"needs the settings it was launched with")
    return registry.get(run_id).target


def plan_weights_job(project_dir: Path, run_id: str, verb: str, arguments: Sequence[str],
                     target: Optional[str], overrides: Sequence[str] = ()) -> LaunchPlan:
    """A one-GPU job running `python -m spottrain VERB --run-id RUN ARGUMENTS` on `target` (default: the run's),
    with the run's settings and then `overrides` (another test CSV, other generation options)."""
    target = target or trained_on(project_dir, run_id, verb)
    launched = runner.launched_recipe(project_dir, run_id)
    if launched is None:
        raise UserError(f"run {run_id}: its registry record keeps no recipe (launched by an older launch?)")
    one_gpu = ("resources.gpus=1", "resources.nodes=1")  # after the run's own: a run on 8 GPUs is judged on 1
    plan = plan_launch(launched.name, target=target, project_dir=project_dir, profile=launched.profile,
                       overrides=[*launched.overrides, *one_gpu, *overrides],
                       run_id=f"{run_id}-{verb}-{_random.token_hex(2)}", code=code_version(project_dir))
    return dataclasses.replace(plan, command=(verb, "--run-id", run_id, *arguments))


def plan_adapter_evaluation(project_dir: Path, recipe: str, target: str, profile: Optional[str], adapter: str,
                            output_dir: str, overrides: Sequence[str]) -> LaunchPlan:
    """A one-GPU job judging an adapter trained anywhere: `recipe`'s base model and test data as `overrides`
    change them (`--model-id`, `--model-type`, `--csv`), `python -m spottrain eval --adapter DIR` on `target`."""
    one_gpu = ("resources.gpus=1", "resources.nodes=1")
    plan = plan_launch(recipe, target=target, project_dir=project_dir, profile=profile,
                       overrides=[*one_gpu, *overrides], run_id=f"adapter-eval-{_random.token_hex(3)}",
                       code=code_version(project_dir))
    [adapter, output_dir] = input_paths([adapter, output_dir], target)
    return dataclasses.replace(plan, command=("eval", "--adapter", adapter, "--output-dir", output_dir))


def evaluation_overrides(target: str, *, test_csv: Optional[str] = None, prompt_template: Optional[str] = None,
                         system_message: Optional[str] = None, batch_size: Optional[int] = None,
                         max_new_tokens: Optional[int] = None, model_id: Optional[str] = None,
                         model_type: Optional[str] = None) -> list[str]:
    """`launch eval`'s options for the VLM task as overrides of the recipe (those given). Strings are
    JSON-quoted: override values are typed as YAML, where "Question: {query}" would be a mapping."""
    settings = {"train.model.id": model_id, "train.model.type": model_type,
                "train.data.test_csv": test_csv and input_paths([test_csv], target)[0],
                "train.evaluation.prompt_template": prompt_template,
                "train.evaluation.system_message": system_message, "train.evaluation.batch_size": batch_size,
                "train.evaluation.generation.max_new_tokens": max_new_tokens}
    return [f"{key}={json.dumps(value)}" for key, value in settings.items() if value is not None]


def input_paths(paths: Sequence[str], target: str) -> list[str]:
    """Inputs as the job sees them: absolute on this machine, as given (a node's paths, a volume's) elsewhere."""
    if get_target(target).RUNS_HERE:
        return [str(Path(p).resolve()) for p in paths]
    return list(paths)
