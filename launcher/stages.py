"""Stage dependencies: the verifiable stage starts from the critic's best checkpoint, found in the store.

"Newest completed critic run of the same experiment": among the runs in the recipe's checkpoint store whose
run id starts with the critic recipe's name, the newest whose final checkpoint is complete; its BEST.json names
the step. Within `launch pipeline` it is the critic run that pipeline just launched, and no other. The result is
passed to the job as an ordinary override, so the trainer, the dry run and MLflow's params all show which critic
checkpoint was used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import yaml

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan, plan_launch
from spottrain_contract.lookup import finished_runs
from spottrain_contract.store import open_store, store_failure

PIPELINES_FILE = "recipes/_pipelines.yaml"
CRITIC_OVERRIDE = "train.verifiable.critic_checkpoint"


def needs_critic(plan: LaunchPlan) -> bool:
    options = getattr(plan.recipe.train, "verifiable", None)
    return options is not None and not options.critic_checkpoint


def find_critic_checkpoint(plan: LaunchPlan, only_run: Optional[str] = None) -> Optional[str]:
    """URI of the best checkpoint of the newest completed critic run in this recipe's store (of `only_run`, if
    given), or None. Reading an s3:// store needs boto3, imported only here, when a store is really read; a
    store that cannot be read is one line naming it."""
    checkpoint = plan.recipe.train.checkpoint
    stage = plan.recipe.train.verifiable.critic_stage
    try:
        store = open_store(checkpoint.uri, checkpoint.endpoint_url)
        for run in finished_runs(store, run_prefix=f"{stage}-", only_run=only_run):
            best = run.best_step()
            if best is not None:
                return run.uri_of(best)
    except Exception as exc:  # boto3 and the filesystem raise many types; every one means "cannot read"
        raise LaunchError(f"{plan.loaded.relpath}: train.checkpoint.uri: cannot read {checkpoint.uri} to find the "
                          f"{stage} checkpoint ({store_failure(exc)})") from None
    return None


def _is_remote(uri: str) -> bool:
    return "://" in uri


def with_critic_checkpoint(plan: LaunchPlan, project_dir: Path, *, required: bool,
                           stage_runs: Optional[dict[str, str]] = None) -> LaunchPlan:
    """The plan with the critic checkpoint resolved, if the recipe needs one and names none. `stage_runs`
    (recipe name -> run id) are the runs a pipeline launched before this stage: a critic among them is the one.
    Not `required` (a dry run) never touches the network: a remote store is only described."""
    if not needs_critic(plan):
        return plan
    stage = plan.recipe.train.verifiable.critic_stage
    uri = plan.recipe.train.checkpoint.uri
    if not required and _is_remote(uri):
        note = (f"critic     the best checkpoint of the newest completed {stage} run in {uri}, looked up at launch "
                f"(or --override {CRITIC_OVERRIDE}=URI)")
        return dataclasses.replace(plan, notes=(*plan.notes, note))
    pinned = (stage_runs or {}).get(stage)
    found = find_critic_checkpoint(plan, only_run=pinned)
    if found is None and pinned:
        raise LaunchError(f"{plan.loaded.relpath}: {CRITIC_OVERRIDE}: {stage} run {pinned} of this pipeline "
                          f"finished without a complete final checkpoint and a BEST.json in "
                          f"{plan.recipe.train.checkpoint.uri}")
    if found is None:
        if not required:
            return plan
        target = f" --target {plan.target}" if plan.target != "skypilot" else ""
        raise LaunchError(f"{plan.loaded.relpath}: {CRITIC_OVERRIDE}: no completed {stage} run in "
                          f"{plan.recipe.train.checkpoint.uri}: run `launch recipe {stage}{target}` first, or "
                          f"pass --override {CRITIC_OVERRIDE}=URI")
    loaded = plan.loaded
    return plan_launch(loaded.name, target=plan.target, project_dir=project_dir, profile=loaded.profile,
                       overrides=[*loaded.overrides, f"{CRITIC_OVERRIDE}={found}"], run_id=plan.run_id,
                       code=plan.code, chaos=plan.chaos, cell=loaded.cell.name if loaded.cell else None,
                       sweep_id=plan.sweep_id)


def pipeline_stages(project_dir: Path, name: str) -> list[str]:
    """The recipes of a named pipeline, in launch order (recipes/_pipelines.yaml)."""
    path = project_dir / PIPELINES_FILE
    pipelines = yaml.safe_load(path.read_text()) if path.is_file() else {}
    if not isinstance(pipelines, dict) or name not in pipelines:
        known = ", ".join(pipelines) if isinstance(pipelines, dict) else ""
        raise LaunchError(f"{PIPELINES_FILE}: no pipeline '{name}' (known: {known or 'none'})")
    stages = pipelines[name]
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise LaunchError(f"{PIPELINES_FILE}: {name}: expected a list of recipe names, got {stages!r}")
    return stages
