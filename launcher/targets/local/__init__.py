"""This machine: the same run script under a supervisor that restarts it the way a managed spot job would.

CPU only (gloo); the recipe's `local` profile picks the micro model and a few steps. The supervisor
(`launcher.targets.local.supervisor`) is its own process with its own log, and keeps the run's record in the project's
registry up to date, so `launch status/logs/stop` work from any shell; `launch recipe --target local` follows
it in the foreground unless `--detach` is given, and Ctrl-C there stops it gracefully (checkpoint first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.registry import RunRecord, registry_of
from launcher.render import job_env, run_script
from launcher.targets import Handle, RunStatus
from launcher.targets.local import processes
from spottrain_contract.job import RunState, progress_path

RUNS_HERE = True
DEFAULT_PROFILE = "local"
STOP_GRACE_SECONDS = 180.0


def unsupported(recipe) -> Optional[str]:
    return None


def describe(recipe) -> str:
    return f"{recipe.resources.preferred_gpus} CPU ranks (gloo), restarted after crashes and preemptions"


def secret_names(recipe) -> list[str]:
    """Every secret the recipe names that is set here; a local run needs no cloud credentials."""
    return list(recipe.secrets)


def preflight(recipe, project_dir) -> list:
    """Nothing to sign in to here: torchrun comes with the trainer's environment."""
    return []


def render(plan: LaunchPlan, secrets) -> str:
    """The exact script the supervisor runs with bash: the job's environment (run id, the shipped recipe) is
    exported in it; secrets travel in the supervisor's environment, never in the script."""
    return run_script(plan, rendezvous="standalone", exports=job_env(plan))


def validate(document: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=document, text=True, capture_output=True)
    if checked.returncode != 0:
        raise LaunchError(f"local run script does not parse: {checked.stderr.strip().splitlines()[0]}")


class LocalHandle(Handle):
    """A run here: the launch writes where its supervisor is and what it runs; the supervisor, each attempt's
    process marker and how the run ended."""

    supervisor_pid: Optional[int] = None
    script: Optional[str] = None  # the rendered run script each attempt runs
    max_restarts_on_errors: int = 0
    log_offset: int = 0  # where this launch's lines start in the run's log (a resume appends)
    attempt: Optional[str] = None  # the marker in the environment of the running attempt's processes
    exit_code: Optional[int] = None
    chaos_kills: int = 0
    steps_computed: Optional[int] = None
    final_step: Optional[int] = None


HANDLE = LocalHandle


def launch(plan: LaunchPlan, document: str, secrets, record: RunRecord) -> LocalHandle:
    """Start the run's supervisor in the background; returns at once."""
    env = {**os.environ, **secrets.as_dict(), "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
           # torchrun from this environment, whether or not the shell that launched has it activated
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "launcher.targets.local.supervisor", "--project", record.project,
               "--run-id", plan.run_id]
    if plan.chaos:
        command += ["--chaos", plan.chaos]
    log_path = Path(record.log)
    written = LocalHandle(script=document, max_restarts_on_errors=plan.recipe.resources.recovery.max_restarts_on_errors,
                          log_offset=log_path.stat().st_size if log_path.is_file() else 0)
    registry_of(Path(record.project)).update(record.run_id, handle=written.entries())  # before the supervisor reads it
    with open(record.log, "ab") as log:
        supervisor = subprocess.Popen(command, cwd=record.project, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    return LocalHandle(supervisor_pid=supervisor.pid)


def status(record: RunRecord) -> RunStatus:
    """The supervisor's state (one that vanished without saying so has failed) and the trainer's step."""
    state = record.state
    if not state.is_terminal and not processes.alive(LocalHandle.of(record).supervisor_pid):
        state = RunState.FAILED
    progress = _progress(record)
    return RunStatus(state=state, step=progress.get("step"), total=progress.get("total"))


def logs(record: RunRecord, follow: bool) -> Iterator[str]:
    """The supervisor's log, every launch of the run; with `follow`, from its latest launch on (a resumed run's
    earlier attempts are not replayed), new lines until the run ends."""
    registry = registry_of(Path(record.project))
    with Path(record.log).open(errors="replace") as source:
        if follow:
            source.seek(LocalHandle.of(record).log_offset)
        while True:
            line = source.readline()
            if line:
                yield line
                continue
            if not follow or status(registry.get(record.run_id)).state.is_terminal:
                rest = source.read()
                if rest:
                    yield rest
                return
            time.sleep(0.2)


def stop(record: RunRecord, grace: float = STOP_GRACE_SECONDS) -> RunState:
    """SIGTERM to the supervisor: the job checkpoints and exits, and the supervisor records the run as stopped.
    Then, only if it is still there after the grace period, SIGKILL to everything it started."""
    handle = LocalHandle.of(record)
    pid = handle.supervisor_pid
    if record.state.is_terminal or not processes.alive(pid):
        return status(record).state
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while processes.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if processes.alive(pid):
        os.kill(pid, signal.SIGKILL)
        if handle.attempt:
            processes.signal_marked(handle.attempt, signal.SIGKILL)
    return status(registry_of(Path(record.project)).get(record.run_id)).state


def _progress(record: RunRecord) -> dict:
    try:
        return json.loads(progress_path(record.local_dir, record.run_id).read_text())
    except (OSError, ValueError):
        return {}
