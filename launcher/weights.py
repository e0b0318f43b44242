"""Jobs that use a run's trained weights: `launch eval RUN` (the task's test metrics) and `launch predict RUN
INPUT...`. Each is a job like a training run, on any target and in the registry under its own id
(`<run>-eval-<hex>`), running `python -m spottrain eval|predict --run-id RUN` on one GPU with the settings the
run was launched with (its profile and overrides, read from the registry).
"""

from __future__ import annotations

import dataclasses
import secrets as _random
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence

from launcher import runner
from launcher.plan import LaunchPlan, code_version, plan_launch, with_overrides
from launcher.registry import Registry
from launcher.requests import JobKind, LaunchRequest
from launcher.rundb.records import WeightsJobOf
from launcher.targets import get_target
from spottrain_contract.errors import UserError
from spottrain_contract.recipe import load_recipe
from spottrain_contract.tasks import job_option_overrides

ONE_GPU = ("resources.gpus=1", "resources.nodes=1")  # after the run's own: a run on 8 GPUs is judged on 1


def trained_on(registry: Registry, run_id: str, kind: JobKind) -> str:
    """The target the run trained on (the default place to use its weights)."""
    if not registry.exists(run_id):
        raise UserError(f"run {run_id} is not in this project's registry (launch status lists them): {kind.value} "
                        f"needs the settings it was launched with")
    return registry.get(run_id).target


def plan_weights_job(registry: Registry, run_id: str, kind: JobKind, arguments: Sequence[str],
                     target: Optional[str], overrides: Sequence[str] = (),
                     options: Mapping[str, Any] = MappingProxyType({})) -> LaunchPlan:
    """A one-GPU job running `python -m spottrain VERB --run-id RUN ARGUMENTS` on `target` (default: the run's),
    with the run's settings (its profile as launched, none where it had none), then its task's job `options`
    (another test CSV, other generation options), then `overrides`."""
    project_dir = registry.project_dir
    target = target or trained_on(registry, run_id, kind)
    launched = runner.launched_recipe(registry.get(run_id) if registry.exists(run_id) else None)
    if launched is None:
        raise UserError(f"run {run_id}: its registry record keeps no recipe (launched by an older launch?)")
    extra = job_overrides(launched.recipe.task, options, target)
    loaded = load_recipe(launched.name, project_dir=project_dir, profile=launched.profile,
                         overrides=[*launched.overrides, *ONE_GPU, *extra, *overrides])
    request = LaunchRequest(launched.name, target, run_id=f"{run_id}-{kind.value}-{_random.token_hex(4)}")
    plan = plan_launch(request, project_dir, code=code_version(project_dir), loaded=loaded)
    return dataclasses.replace(plan, command=(kind.value, "--run-id", run_id, *arguments),
                               job_of=WeightsJobOf(kind=kind, run_id=run_id))


def plan_adapter_evaluation(project_dir: Path, request: LaunchRequest, adapter: str, output_dir: str,
                            options: Mapping[str, Any]) -> LaunchPlan:
    """A one-GPU job judging an adapter trained anywhere: the request's recipe with its base model and test data
    as the task's job `options` change them (model_id, model_type, csv), `python -m spottrain eval --adapter DIR`
    on the request's target."""
    request = request.but(overrides=(*ONE_GPU, *request.overrides), run_id=f"adapter-eval-{_random.token_hex(3)}")
    plan = plan_launch(request, project_dir, code=code_version(project_dir))
    extra = job_overrides(plan.recipe.task, options, request.target)
    plan = with_overrides(plan, project_dir, *extra) if extra else plan
    target = request.target
    [adapter] = existing_inputs([adapter], target, "--lora-path")
    [output_dir] = input_paths([output_dir], target)
    return dataclasses.replace(plan, command=("eval", "--adapter", adapter, "--output-dir", output_dir))


def job_overrides(task: str, options: Mapping[str, Any], target: str) -> list[str]:
    """The overrides the task's declared job options make (`spottrain_contract.tasks.JobOption`); a path option is
    made absolute for a job here."""
    return job_option_overrides(task, options,
                                lambda name, path: existing_inputs([path], target, f"--option {name}")[0])


def existing_inputs(paths: Sequence[str], target: str, what: str) -> list[str]:
    """`input_paths` of what a job reads: for a job here, each must exist (one line before anything starts, not a
    failure after torchrun's start-up); a platform's are paths on its node, not checked from here."""
    found = input_paths(paths, target)
    if get_target(target).RUNS_HERE:
        for given, path in zip(paths, found):
            if not Path(path).exists():
                raise UserError(f"{what}: {given}: no such file or directory (the job runs here, on {target})")
    return found


def input_paths(paths: Sequence[str], target: str) -> list[str]:
    """Inputs as the job sees them: absolute on this machine, as given (a node's paths, a volume's) elsewhere."""
    if get_target(target).RUNS_HERE:
        return [str(Path(p).resolve()) for p in paths]
    return list(paths)
