"""A launch plan: the resolved recipe plus what this one launch adds (target, run id, code version, chaos)."""

from __future__ import annotations

import dataclasses
import secrets as _random
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from launcher.requests import LaunchRequest
from launcher.rundb.records import WeightsJobOf
from spottrain_contract.command import CommandRecipe
from spottrain_contract.recipe import LoadedRecipe, flatten, load_recipe
from spottrain_contract.schema import Recipe


@dataclass(frozen=True)
class CodeVersion:
    """The commit a launch came from; `dirty` when the working tree had uncommitted changes (SkyPilot syncs the
    working tree as it is, VESSL clones the commit)."""

    commit: str
    dirty: bool = False

    def __str__(self) -> str:
        return f"{self.commit}+dirty" if self.dirty else self.commit


@dataclass(frozen=True)
class LaunchPlan:
    loaded: LoadedRecipe
    target: str
    run_id: str
    code: Optional[CodeVersion] = None
    chaos: Optional[str] = None  # a run here: kill the job at random moments (launcher.targets.local.supervisor)
    command: tuple[str, ...] = ("train",)  # what the job runs: `python -m spottrain <command>` under torchrun
    notes: tuple[str, ...] = ()  # summary lines about what is settled only at launch (e.g. the critic lookup)
    sweep_id: Optional[str] = None  # a sweep's cell (its cell is the loaded recipe's): the sweep it is a run of
    mlflow_parent: Optional[str] = None  # the sweep's parent MLflow run, made at launch (launcher.sweeps.parent)
    job_of: Optional[WeightsJobOf] = None  # a job on another run's weights (eval, predict), not a training run

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    def _batch_change(self) -> str:
        """` (64 as the recipe gives it: the overrides change the global batch)` where they do (`--gpus 3`)."""
        loaded, r = self.loaded, self.recipe
        written = (loaded.as_written("train.batch.per_gpu", r.train.batch.per_gpu)
                   * loaded.as_written("train.batch.grad_accum", r.train.batch.grad_accum)
                   * _first(loaded.as_written("resources.gpus", r.resources.gpus))
                   * loaded.as_written("resources.nodes", r.resources.nodes))
        if written == r.effective_batch:
            return ""
        return f" ({written} as the recipe gives it: the overrides change the global batch)"

    def summary(self, where: str, *, secrets: bool = True) -> str:
        """What a person checks before renting GPUs; `where` is the target's own line (resources, recovery);
        `secrets`: name the secrets passed at launch (a run here needs none)."""
        r = self.recipe
        lines = [
            f"recipe     {self.loaded.name} ({self.loaded.relpath})"
            + (f", profile {self.loaded.profile}" if self.loaded.profile else ""),
            f"target     {self.target}: {where}",
            *self._training_lines(),
            f"run id     {self.run_id}",
            f"store      {r.train.checkpoint.uri}",
        ]
        if self.loaded.cell is not None:
            cell = self.loaded.cell
            changes = " ".join(override_text(key, value) for key, value in cell.overrides.items())
            lines.append(f"sweep      {self.sweep_id}, cell {cell.name}: {changes or 'the recipe as written'}")
        if self.code:
            lines.append(f"code       {self.code.commit[:12]}" + (
                " + uncommitted changes (SkyPilot syncs the working tree as it is; VESSL clones the commit)"
                if self.code.dirty else ""))
        if len(r.resources.candidates) > 1:
            kept = ", ".join(f"grad-accum {r.grad_accum_on(g)} on {g}" for g in r.resources.gpu_counts[1:])
            lines.append(f"capacity   {', '.join(r.resources.candidates)}, in this order"
                         + (f" (global batch {r.effective_batch} kept: {kept})" if kept else ""))
        if self.loaded.overrides:
            lines.append(f"overrides  {' '.join(self.loaded.overrides)}")
        if self.loaded.changes:
            lines.append(f"changes    {'; '.join(self.loaded.changes)} (since the launch; logged at the resume step)")
        lines += self.notes
        if secrets and r.secrets:
            lines.append(f"secrets    {', '.join(r.secrets)} (values passed at launch, never written)")
        return "\n".join(lines)


    def _training_lines(self) -> list[str]:
        """What is trained: the task's length and global batch, or a command recipe's command and config."""
        r = self.recipe
        if isinstance(r, CommandRecipe):
            how = "python" if r.launcher == "python" else f"torchrun × {r.world_size} ranks"
            return [f"command    {how}: {shlex.join(r.argv)}",
                    f"config     {r.config_file}, {len(flatten(r.config))} settings"
                    + (f", checked by {r.config_schema}" if r.config_schema else "")]
        batch = r.train.batch
        return [f"task       {r.task}, {r.train.epochs} epochs"
                + (f", at most {r.train.max_steps} steps" if r.train.max_steps else ""),
                f"batch      {batch.per_gpu}/GPU × grad-accum {batch.grad_accum} × {r.world_size} GPUs "
                f"= {r.effective_batch} effective" + self._batch_change()]


def _first(value) -> int:
    return value[0] if isinstance(value, list) else value


def cluster_summary(recipe: Recipe) -> str:
    """`4× A100-80GB × 1 node, spot, recovery EAGER_NEXT_REGION`: the summary line of a platform target (`4 or 2×
    A100-80GB or A100` where the recipe accepts several)."""
    res = recipe.resources
    nodes = f"{res.nodes} node{'s' if res.nodes > 1 else ''}"
    return (f"{res.shape} × {nodes}, "
            + (f"spot, recovery {res.recovery.strategy}" if res.spot else "on-demand"))


def new_run_id(recipe_name: str, now: Optional[float] = None) -> str:
    """`<recipe>-<UTC time>-<8 hex>`: assigned once per launch, the same across every restart of the job. 32 random
    bits a second: teammates launching one recipe in the same second on one database do not collide in practice
    (and a clash is refused, never written over: `Registry.create`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{recipe_name}-{stamp}-{_random.token_hex(4)}"


def code_version(project_dir: Path) -> Optional[CodeVersion]:
    """HEAD and whether tracked or untracked-not-ignored files differ from it; None outside a git checkout."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip()
    if not commit:
        return None
    return CodeVersion(commit, dirty=bool((git("status", "--porcelain") or "").strip()))


def plan_launch(request: LaunchRequest, project_dir: Path, *, code: Optional[CodeVersion] = None,
                loaded: Optional[LoadedRecipe] = None) -> LaunchPlan:
    """The recipe of `request`, loaded and validated once (its profile, or the target's default; `--gpus`/`--nodes`
    as overrides, so the shipped recipe records them like any other; one cell of its sweep), with a run id.
    `loaded`: the request's recipe, already loaded by the caller (not loaded again)."""
    loaded = loaded or load_recipe(request.recipe, project_dir=project_dir, profile=effective_profile(request),
                                   overrides=request.sized(), cell=request.cell)
    return LaunchPlan(loaded=loaded, target=request.target, run_id=request.run_id or new_run_id(loaded.name),
                      code=code, chaos=request.chaos, sweep_id=request.sweep_id)


def effective_profile(request: LaunchRequest) -> Optional[str]:
    """What a launch applies: the profile asked for, else its target's default (local: `local`)."""
    from launcher.targets import get_target

    return request.profile or get_target(request.target).DEFAULT_PROFILE


def with_overrides(plan: LaunchPlan, project_dir: Path, *overrides: str) -> LaunchPlan:
    """The plan with settings resolved at launch added as ordinary overrides (a stage's input found in a store):
    validated like any, and shown by the dry run, the shipped recipe and MLflow's params."""
    loaded = plan.loaded
    reloaded = load_recipe(loaded.name, project_dir=project_dir, profile=loaded.profile,
                           overrides=[*loaded.overrides, *overrides], cell=loaded.cell)
    return dataclasses.replace(plan, loaded=dataclasses.replace(reloaded, changes=loaded.changes))


def override_text(key: str, value) -> str:
    """`train.optim.lr=0.0001`: a dotted setting as `--override` takes it (the value in YAML's flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return f"{key}={text.removesuffix('...').strip()}"
