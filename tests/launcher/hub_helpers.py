"""Helpers of the hub tests: a project with the real recipes, the app over it, waiting for a run's state."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from launch_helpers import copy_real_recipes

TINY = {"train.max_steps": 6, "train.checkpoint.every_steps": 3, "train.eval.every_steps": 3}


def hub_project(root: Path) -> Path:
    return copy_real_recipes(root, ("baseline",))


FIXTURE_RECIPES = Path(__file__).with_name("recipes")
SCRIPT_RECIPES = ("script_schema", "script_implied")  # command recipes: one with a JSON Schema, one without


def command_project(root: Path) -> Path:
    """The hub's project plus the command fixture recipes (and the schemas they name)."""
    project = hub_project(root)
    for name in SCRIPT_RECIPES:
        shutil.copy(FIXTURE_RECIPES / f"{name}.yaml", project / "recipes" / f"{name}.yaml")
    shutil.copytree(FIXTURE_RECIPES / "schemas", project / "recipes" / "schemas", dirs_exist_ok=True)
    return project


def client_for(project: Path, token=None, **options):
    """`options`: more of create_app's (mlflow_uri)."""
    from fastapi.testclient import TestClient

    from launcher.hub.app import create_app

    client = TestClient(create_app(project, token=token, poll_seconds=0.2, **options), base_url="http://127.0.0.1")
    client.cookies.set("spottrain_csrf", "test")  # what a page gets, and sends back in the header
    client.headers["X-Spottrain-CSRF"] = "test"
    return client


def wait_for_state(client, run_id: str, states, timeout: float = 240, *, training: bool = False) -> dict:
    """The run once in one of `states` (with `training`: once its trainer reports a step, so it is in its loop
    and checkpoints on SIGTERM; a stop while torchrun is still starting fails the attempt)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["state"] in states and (not training or (run["step"] or 0) > 0):
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['state']} after {timeout}s"
        time.sleep(0.5)
