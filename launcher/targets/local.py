"""This machine: the same run script under a supervisor that restarts it the way a managed spot job would.

CPU only (gloo); the recipe's `local` profile picks the micro model and a few steps. A crash restarts the job up
to `resources.recovery.max_restarts_on_errors` times; a preemption exit (75) always restarts it; each restart
resumes from the newest complete checkpoint of the same run id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from launcher import job_contract
from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.render import job_env, run_script

DEFAULT_PROFILE = "local"
GRACE_SECONDS = 120


def render(plan: LaunchPlan, secrets) -> str:
    """The exact script the supervisor runs with bash (secrets travel in the environment, never in it)."""
    return run_script(plan, rendezvous="standalone")


def validate(document: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=document, text=True, capture_output=True)
    if checked.returncode != 0:
        raise LaunchError(f"local run script does not parse: {checked.stderr.strip().splitlines()[0]}")


@dataclass
class Attempt:
    number: int
    exit_code: int
    seconds: float


def launch(plan: LaunchPlan, secrets, project_dir: Path,
           on_attempt: Optional[Callable[[Attempt], None]] = None) -> list[Attempt]:
    """Run to completion, restarting after preemptions and (bounded) crashes. Returns every attempt."""
    script = render(plan, secrets)
    env = {**os.environ, **job_env(plan), **secrets.as_dict(), "CUDA_VISIBLE_DEVICES": ""}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(project_dir / "runs" / ".torch_extensions"))
    budget = plan.recipe.resources.recovery.max_restarts_on_errors
    attempts: list[Attempt] = []
    while True:
        started = time.monotonic()
        code = _run_once(script, env, project_dir)
        attempts.append(Attempt(len(attempts) + 1, code, time.monotonic() - started))
        if on_attempt:
            on_attempt(attempts[-1])
        if code == 0:
            return attempts
        if code != job_contract.PREEMPTED_EXIT_CODE:
            budget -= 1
            if budget < 0:
                raise LaunchError(f"run {plan.run_id} failed with exit code {code} after "
                                  f"{plan.recipe.resources.recovery.max_restarts_on_errors} restarts")


def _run_once(script: str, env: dict, cwd: Path) -> int:
    """One attempt in its own process group; Ctrl-C becomes a graceful SIGTERM (checkpoint, then exit)."""
    process = subprocess.Popen(["bash", "-c", script], env=env, cwd=cwd, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        print("interrupted: the run checkpointed and stopped; launch it again with the same run id to resume",
              file=sys.stderr)
        raise SystemExit(130)
