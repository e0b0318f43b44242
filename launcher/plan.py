"""A launch plan: the resolved recipe plus what this one launch adds (target, run id, code version)."""

from __future__ import annotations

import secrets as _random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from launcher.recipes import LoadedRecipe, load_recipe
from launcher.schema import Recipe


@dataclass(frozen=True)
class LaunchPlan:
    loaded: LoadedRecipe
    target: str
    run_id: str
    git_commit: Optional[str] = None

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    def summary(self) -> str:
        """What a person checks before renting GPUs: resources, effective batch, run id, secret names."""
        r = self.recipe
        res, batch = r.resources, r.train.batch
        nodes = f"{res.nodes} node{'s' if res.nodes > 1 else ''}"
        lines = [
            f"recipe     {self.loaded.name} ({self.loaded.relpath})"
            + (f", profile {self.loaded.profile}" if self.loaded.profile else ""),
            f"target     local: {res.gpus} CPU ranks (gloo), restarted after crashes and preemptions"
            if self.target == "local" else
            f"target     {self.target}: {res.gpus}× {res.accelerator} × {nodes}, "
            + (f"spot, recovery {res.recovery.strategy}" if res.spot else "on-demand"),
            f"pipeline   {r.pipeline}, {r.train.epochs} epochs"
            + (f", at most {r.train.max_steps} steps" if r.train.max_steps else ""),
            f"batch      {batch.per_gpu}/GPU × grad-accum {batch.grad_accum} × {r.world_size} GPUs "
            f"= {r.effective_batch} effective",
            f"run id     {self.run_id}",
        ]
        if self.loaded.overrides:
            lines.append(f"overrides  {' '.join(self.loaded.overrides)}")
        if r.secrets:
            lines.append(f"secrets    {', '.join(r.secrets)} (values passed at launch, never written)")
        return "\n".join(lines)


def new_run_id(recipe_name: str, now: Optional[float] = None) -> str:
    """`<recipe>-<UTC time>-<4 hex>`: assigned once per launch, the same across every restart of the job."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{recipe_name}-{stamp}-{_random.token_hex(2)}"


def git_commit(project_dir: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def plan_launch(name: str, *, target: str, project_dir: Path, gpus: Optional[int] = None,
                nodes: Optional[int] = None, overrides: Iterable[str] = (), profile: Optional[str] = None,
                run_id: Optional[str] = None, commit: Optional[str] = None) -> LaunchPlan:
    """`--gpus`/`--nodes` become overrides, so the trainer on the node resolves the very same recipe."""
    sized = [f"resources.gpus={gpus}"] if gpus is not None else []
    sized += [f"resources.nodes={nodes}"] if nodes is not None else []
    loaded = load_recipe(name, project_dir=project_dir, profile=profile, overrides=[*sized, *overrides])
    return LaunchPlan(loaded=loaded, target=target, run_id=run_id or new_run_id(loaded.name), git_commit=commit)
