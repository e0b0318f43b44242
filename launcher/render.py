"""Jinja rendering shared by the targets: strict undefined, every value through a safe filter.

Templates hold no logic beyond loops and conditionals; a target computes the values, this module turns them into
text. `yaml` makes any value a YAML node that parses back byte-identical; `shell` quotes a list of arguments.
"""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Optional

import jinja2

from launcher.plan import LaunchPlan
from launcher.yaml_safe import yaml_value
from spottrain_contract import job
from spottrain_contract.command import COMMAND_WRAPPER, CommandRecipe

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True)
    env.filters["yaml"] = yaml_value
    env.filters["shell"] = lambda args: " ".join(shlex.quote(str(a)) for a in args)
    return env


def render_template(template: str, **values) -> str:
    return _environment().get_template(template).render(**values)


def run_script(plan: LaunchPlan, rendezvous: str, exports: Optional[dict[str, str]] = None) -> str:
    """torchrun around `python -m spottrain train` (or the plan's other command: eval, predict), which reads the
    recipe shipped in the job's environment; a command recipe's training runs its own command, under torchrun or
    python, inside the node wrapper (`python -m spottrain command -- …`). `exports` puts the job's environment in
    the script itself, for a target without an env section."""
    recipe, wrapper, launcher = plan.recipe, "", "torchrun"
    entry = ["-m", job.TRAINER_MODULE, *plan.command]
    if isinstance(recipe, CommandRecipe) and plan.job_of is None:
        wrapper = f"python -m {job.TRAINER_MODULE} {COMMAND_WRAPPER} -- "
        entry, launcher = recipe.argv, recipe.launcher
    return render_template(
        "torchrun.sh.j2", rendezvous=rendezvous, gpus=recipe.resources.preferred_gpus, master_port=job.MASTER_PORT,
        wrapper=wrapper, launcher=launcher, entry=entry, exit_file_env=job.EXIT_FILE_ENV, exports=exports or {})


def with_ranks(script: str, ranks: int) -> str:
    """A standalone run script (`run_script`) that starts `ranks` trainer ranks instead of the recipe's GPUs: what
    spot capacity that came back in another shape looks like here (a platform's script reads the GPUs present)."""
    return re.sub(r"--nproc_per_node=\d+", f"--nproc_per_node={ranks}", script)


def job_env(plan: LaunchPlan) -> dict[str, str]:
    """The recipe's env plus what the job needs: its run id (stable across restarts), the resolved recipe it
    trains (exactly what the dry run shows) and the commit it was launched from; for a sweep's cell, the sweep's
    parent MLflow run (made at launch: a dry run cannot show it)."""
    env = dict(plan.recipe.env)
    env[job.RUN_ID_ENV] = plan.run_id
    env[job.TARGET_ENV] = plan.target
    if plan.code:
        env[job.GIT_COMMIT_ENV] = str(plan.code)
    env[job.RECIPE_ENV] = plan.loaded.shipped()
    if plan.mlflow_parent:
        env[job.MLFLOW_PARENT_RUN_ENV] = plan.mlflow_parent
    return env
