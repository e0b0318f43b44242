"""The render a person sees: secrets masked, validated like the real one. Never handed to a platform."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan, code_version, plan_launch
from launcher.secrets import MaskedSecrets
from launcher.stages import with_critic_checkpoint
from launcher.targets import get_target
from spottrain_contract.recipe import LoadedRecipe, setting_changes


def render_for_display(name: str, *, target: str, project_dir: Path, gpus=None, nodes=None, profile=None,
                       overrides=(), run_id=None, stages: str = "ignore", stage_runs=None, chaos=None,
                       resuming: Optional[LoadedRecipe] = None, allow_changes: bool = False, cell=None,
                       sweep_id=None) -> tuple[LaunchPlan, str]:
    """`stages`: "ignore" (render as written, e.g. `launch check`), "resolve" (fill in a critic checkpoint if
    one is found) or "require" (a launch: no critic checkpoint is an error); `stage_runs`: the runs of the
    earlier stages of a pipeline (stages.with_critic_checkpoint). `resuming`: the recipe the run was launched
    with; settings that differ from it are refused, listed, unless `allow_changes` (then the job logs them).
    `cell`: one cell of the recipe's sweep `sweep_id`."""
    module = get_target(target)
    plan = plan_launch(name, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes, profile=profile,
                       overrides=overrides, run_id=run_id, code=code_version(project_dir), chaos=chaos, cell=cell,
                       sweep_id=sweep_id)
    if stages != "ignore":
        plan = with_critic_checkpoint(plan, project_dir, required=stages == "require", stage_runs=stage_runs)
    if resuming is not None:
        plan = _as_resumed(plan, resuming, allow_changes)
    document = module.render(plan, MaskedSecrets(module.secret_names(plan.recipe)))
    module.validate(document)
    return plan, document


def _as_resumed(plan: LaunchPlan, launched: LoadedRecipe, allow_changes: bool) -> LaunchPlan:
    changes = setting_changes(launched.recipe, plan.recipe)
    if changes and not allow_changes:
        listed = "; ".join(changes)
        raise LaunchError(f"run {plan.run_id} was launched with other settings ({listed}): resume without changing "
                          f"them (`launch recipe {plan.loaded.name} --run-id {plan.run_id}` reuses the launch's "
                          f"overrides), or pass --allow-changes to train on with these")
    return dataclasses.replace(plan, loaded=dataclasses.replace(plan.loaded, changes=tuple(changes)))
