"""Jinja rendering shared by the targets: strict undefined, every value through a safe filter.

Templates hold no logic beyond loops and conditionals; a target computes the values, this module turns them into
text. `yaml` makes any value a YAML node that parses back byte-identical; `shell` quotes a list of arguments.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path

import jinja2

from launcher import job_contract
from launcher.plan import LaunchPlan
from launcher.yaml_safe import yaml_value

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


def trainer_args(plan: LaunchPlan) -> list[str]:
    """`train --recipe recipes/x.yaml [--profile p] [--override k=v ...]`: the node resolves the same recipe."""
    loaded = plan.loaded
    args = ["train", "--recipe", loaded.relpath]
    if loaded.profile:
        args += ["--profile", loaded.profile]
    for override in loaded.overrides:
        args += ["--override", override]
    return args


def run_script(plan: LaunchPlan, rendezvous: str) -> str:
    return render_template(
        "torchrun.sh.j2", rendezvous=rendezvous, gpus=plan.recipe.resources.gpus,
        master_port=job_contract.MASTER_PORT, trainer_module=job_contract.TRAINER_MODULE,
        trainer_args=trainer_args(plan), exit_file_env=job_contract.EXIT_FILE_ENV)


def job_env(plan: LaunchPlan) -> dict[str, str]:
    """The recipe's env plus what the trainer needs to find its run again after a restart."""
    env = dict(plan.recipe.env)
    env[job_contract.RUN_ID_ENV] = plan.run_id
    if plan.git_commit:
        env[job_contract.GIT_COMMIT_ENV] = plan.git_commit
    return env
