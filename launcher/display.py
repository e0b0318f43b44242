"""The render a person sees: secrets masked, validated like the real one. Never handed to a platform."""

from __future__ import annotations

from pathlib import Path

from launcher.plan import LaunchPlan, code_version, plan_launch
from launcher.secrets import MaskedSecrets
from launcher.stages import with_critic_checkpoint
from launcher.targets import get_target


def render_for_display(name: str, *, target: str, project_dir: Path, gpus=None, nodes=None, profile=None,
                       overrides=(), run_id=None, stages: str = "ignore", stage_runs=None,
                       chaos=None) -> tuple[LaunchPlan, str]:
    """`stages`: "ignore" (render as written, e.g. `launch check`), "resolve" (fill in a critic checkpoint if
    one is found) or "require" (a launch: no critic checkpoint is an error); `stage_runs`: the runs of the
    earlier stages of a pipeline (stages.with_critic_checkpoint)."""
    module = get_target(target)
    plan = plan_launch(name, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes, profile=profile,
                       overrides=overrides, run_id=run_id, code=code_version(project_dir), chaos=chaos)
    if stages != "ignore":
        plan = with_critic_checkpoint(plan, project_dir, required=stages == "require", stage_runs=stage_runs)
    document = module.render(plan, MaskedSecrets(module.secret_names(plan.recipe)))
    module.validate(document)
    return plan, document
