"""Stage inputs, resolved for every task alike: an option a task declares with `stage_input` (the verifiable
stage's critic checkpoint) and a recipe leaves unset is the best checkpoint of the newest completed run of the
recipe it names, found in the recipe's checkpoint store.

"Newest completed run": among the runs in the store whose run id starts with the producing recipe's name, the
newest whose final checkpoint is complete; its BEST.json names the step. Within `launch pipeline` it is the run
of that recipe the pipeline just launched, and no other. The result is passed to the job as an ordinary override,
so the trainer, the dry run and MLflow's params all show which checkpoint was used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Optional

import yaml

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan, with_overrides
from spottrain_contract.lookup import finished_runs
from spottrain_contract.stage_inputs import StageInput, unset_stage_inputs
from spottrain_contract.store import open_store, store_failure

PIPELINES_FILE = "recipes/_pipelines.yaml"


def best_checkpoint_of(plan: LaunchPlan, stage: str, only_run: Optional[str] = None) -> Optional[str]:
    """URI of the best checkpoint of the newest completed `stage` run in this recipe's store (of `only_run`, if
    given), or None. Reading an s3:// store needs boto3, imported only here, when a store is really read; a
    store that cannot be read is one line naming it."""
    checkpoint = plan.recipe.train.checkpoint
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


def with_stage_inputs(plan: LaunchPlan, project_dir: Path, *, required: bool,
                      after: Optional[Mapping[str, str]] = None) -> LaunchPlan:
    """The plan with each unset stage input resolved. `after` (recipe name -> run id) are the runs a pipeline
    launched before this stage: a producing run among them is the one. Not `required` (a dry run) never touches
    the network: an input in a remote store is only described."""
    found, notes = [], []
    for needed in unset_stage_inputs(plan.recipe.train):
        uri = _resolve(plan, needed, required=required, pinned=(after or {}).get(needed.stage))
        if uri is None and not required and "://" in plan.recipe.train.checkpoint.uri:
            notes.append(f"{needed.stage:<10} the best checkpoint of the newest completed {needed.stage} run in "
                         f"{plan.recipe.train.checkpoint.uri}, looked up at launch (or --override {needed.key}=URI)")
        elif uri is not None:
            found.append(f"{needed.key}={uri}")
    resolved = with_overrides(plan, project_dir, *found) if found else plan
    return dataclasses.replace(resolved, notes=(*resolved.notes, *notes))


def _resolve(plan: LaunchPlan, needed: StageInput, *, required: bool, pinned: Optional[str]) -> Optional[str]:
    uri = plan.recipe.train.checkpoint.uri
    if not required and "://" in uri:
        return None
    found = best_checkpoint_of(plan, needed.stage, only_run=pinned)
    if found is None and pinned:
        raise LaunchError(f"{plan.loaded.relpath}: {needed.key}: {needed.stage} run {pinned} of this pipeline "
                          f"finished without a complete final checkpoint and a BEST.json in {uri}")
    if found is None and required:
        raise LaunchError(f"{plan.loaded.relpath}: {needed.key}: no completed {needed.stage} run in {uri}: run "
                          f"`launch recipe {needed.stage} --target {plan.target}` first, or pass "
                          f"--override {needed.key}=URI")
    return found


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


def pipeline_names(project_dir: Path) -> list[str]:
    """The pipelines recipes/_pipelines.yaml names (none where it is missing or not a mapping)."""
    path = project_dir / PIPELINES_FILE
    pipelines = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return list(pipelines) if isinstance(pipelines, dict) else []
