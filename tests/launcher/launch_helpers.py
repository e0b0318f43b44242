"""Helpers shared by the launcher tests (a module of its own: test modules import it, never conftest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional, Union

PROJECT_DIR = Path(__file__).resolve().parents[2]
BASE_RECIPE = PROJECT_DIR / "recipes" / "_base.yaml"
TARGETS = ("skypilot", "vessl")


def write_project(root: Path, recipes: dict[str, Union[str, bytes]],
                  base_edit: Optional[tuple[str, str]] = None) -> Path:
    """A project at `root`: the real recipes/_base.yaml (optionally with one text replaced) plus `recipes`."""
    (root / "recipes").mkdir(parents=True)
    base = BASE_RECIPE.read_text(encoding="utf-8")
    if base_edit is not None:
        old, new = base_edit
        assert old in base, f"{old!r} is no longer in recipes/_base.yaml: update the test"
        base = base.replace(old, new, 1)
    (root / "recipes" / "_base.yaml").write_text(base, encoding="utf-8")
    for name, text in recipes.items():
        path = root / "recipes" / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def copy_real_recipes(root: Path, names: Optional[tuple[str, ...]] = None) -> Path:
    """A project at `root` holding a copy of the real recipes: all of them, or `_base` plus `names`."""
    (root / "recipes").mkdir(parents=True)
    for path in sorted((PROJECT_DIR / "recipes").glob("*.yaml")):
        if names is None or path.stem == "_base" or path.stem in names:
            shutil.copy(path, root / "recipes" / path.name)
    shutil.copytree(PROJECT_DIR / "recipes" / "schemas", root / "recipes" / "schemas")  # command recipes' configs
    return root


def launch_executable() -> str:
    """The `launch` console script of the interpreter running the tests (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("launch")
    found = str(beside) if beside.is_file() else shutil.which("launch")
    assert found, "no `launch` console script: install the project (pip install -e .)"
    return found


def launch_env(home: Path) -> dict[str, str]:
    """The CLI's environment in tests: private HOME, no SkyPilot usage reports, no LAUNCH_PROJECT_DIR."""
    env = {k: v for k, v in os.environ.items() if k != "LAUNCH_PROJECT_DIR"}
    env.update(HOME=str(home), SKYPILOT_DISABLE_USAGE_COLLECTION="1")
    return env


def run_launch(*args: str, home: Path, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess:
    """`launch ARGS` from `cwd` as the shell runs it (its exit code, stdout and stderr, the environment of
    launch_env), but in this process: a subprocess spends seconds importing the CLI's libraries for every command.
    A test that needs a fresh process (what a command imports, the console script itself) runs
    launch_executable() instead."""
    import pytest
    from click.testing import CliRunner

    from launcher.cli import main

    env = {"HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "LAUNCH_PROJECT_DIR": None}
    with pytest.MonkeyPatch.context() as patch, CliRunner(mix_stderr=False).isolation(env=env) as (out, err):
        patch.chdir(cwd)
        patch.setattr(sys, "argv", ["launch", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:  # as the interpreter exits: None is 0, a message is printed and exits 1
            code = exc.code or 0
            if not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        return subprocess.CompletedProcess(list(args), code, out.getvalue().decode(), err.getvalue().decode())


def plan_launch(name: str, *, target: str, project_dir: Path, profile: Optional[str] = None, overrides=(),
                run_id: Optional[str] = None, cell: Optional[str] = None, **sizing):
    """The launch plan of recipe `name` as written, under `profile` only where one is given (None: the recipe
    bare, whatever the target's default), for tests of the layers below the operations."""
    from launcher.plan import plan_launch as plan
    from launcher.requests import LaunchRequest
    from spottrain_contract.recipe import load_recipe

    request = LaunchRequest(name, target, profile=profile, overrides=tuple(overrides), run_id=run_id, cell=cell,
                            **sizing)
    loaded = load_recipe(name, project_dir=project_dir, profile=profile, overrides=request.sized(), cell=cell)
    return plan(request, project_dir, loaded=loaded)


def render_for_display(name: str, **planned):
    """(the plan, the document its target would receive with secrets masked), as `launch render` shows it: the
    plan carries the checkout's commit."""
    import dataclasses

    import launcher.plan
    from launcher.display import masked_document

    plan = plan_launch(name, **planned)
    plan = dataclasses.replace(plan, code=launcher.plan.code_version(planned["project_dir"]))
    return plan, masked_document(plan)
