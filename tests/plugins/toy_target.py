"""A toy platform, as a team would add its own cluster: one module, registered by one entry point line.

The "platform" is a directory ($TOY_PLATFORM_DIR): a launch writes the job there as JSON, and the job's state is
whatever a `<run id>.state` file beside it says (pending until then).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Optional

from launcher.errors import LaunchError
from launcher.render import job_env
from launcher.targets import Handle, RunStatus
from spottrain_contract.job import RunState

RUNS_HERE = False
DEFAULT_PROFILE = None


def _platform() -> Path:
    return Path(os.environ["TOY_PLATFORM_DIR"])


def unsupported(recipe) -> Optional[str]:
    return None if recipe.resources.nodes == 1 else "resources.nodes: the toy platform has one node"


def describe(recipe) -> str:
    return f"{recipe.resources.gpus} toy GPUs"


def secret_names(recipe) -> list[str]:
    return []


def render(plan, secrets) -> str:
    problem = unsupported(plan.recipe)
    if problem:
        raise LaunchError(f"{plan.loaded.relpath}: {problem}")
    return json.dumps({"name": plan.recipe.name, "gpus": plan.recipe.resources.gpus, "env": job_env(plan)},
                      indent=1, sort_keys=True) + "\n"


def validate(document: str) -> None:
    if not json.loads(document).get("name"):
        raise LaunchError("toy job: name: required")


class ToyHandle(Handle):
    job_file: str


HANDLE = ToyHandle


def launch(plan, document: str, secrets, record) -> ToyHandle:
    path = _platform() / f"{record.run_id}.json"
    path.write_text(document)
    return ToyHandle(job_file=str(path))


def status(record) -> RunStatus:
    state_file = _platform() / f"{record.run_id}.state"
    return RunStatus(RunState(state_file.read_text().strip()) if state_file.is_file() else RunState.PENDING)


def logs(record, follow: bool) -> Iterator[str]:
    yield f"toy job {record.run_id}\n"


def stop(record) -> RunState:
    (_platform() / f"{record.run_id}.state").write_text("stopped")
    return RunState.STOPPED
