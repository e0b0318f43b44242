"""This machine: the same run script under a supervisor that restarts it the way a managed spot job would.

CPU only (gloo); the recipe's `local` profile picks the micro model and a few steps. The supervisor
(`launcher.supervisor`) is its own process with its own log, recorded in the project's run registry, so
`launch status/logs/stop` work from any shell; `launch recipe --target local` follows it in the foreground
unless `--detach` is given, and Ctrl-C there stops it gracefully (checkpoint first).
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

from launcher import job_contract, processes
from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.registry import Registry, RunRecord
from launcher.render import job_env, run_script

TERMINAL_STATES = ("finished", "failed", "stopped")
STOP_GRACE_SECONDS = 180.0


def render(plan: LaunchPlan, secrets) -> str:
    """The exact script the supervisor runs with bash (secrets travel in the environment, never in it)."""
    return run_script(plan, rendezvous="standalone")


def validate(document: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=document, text=True, capture_output=True)
    if checked.returncode != 0:
        raise LaunchError(f"local run script does not parse: {checked.stderr.strip().splitlines()[0]}")


def launch(plan: LaunchPlan, secrets, project_dir: Path, *, chaos: Optional[str] = None) -> RunRecord:
    """Register the run and start its supervisor in the background; returns at once."""
    registry = Registry(project_dir)
    checkpoint = plan.recipe.train.checkpoint
    local_dir = str(project_dir / checkpoint.local_dir)  # absolute: status may be asked from anywhere
    record = RunRecord(
        run_id=plan.run_id, recipe=plan.loaded.name, target="local", state="launching", started=time.time(),
        store=checkpoint.uri if "://" in checkpoint.uri else str(project_dir / checkpoint.uri), local_dir=local_dir,
        tracking_uri=job_contract.mlflow_tracking_uri(plan.recipe.mlflow.tracking_uri, local_dir),
        log=str(registry.log_path(plan.run_id)),
        handle={"script": render(plan, secrets),
                "max_restarts_on_errors": plan.recipe.resources.recovery.max_restarts_on_errors})
    registry.save(record)
    env = {**os.environ, **job_env(plan), **secrets.as_dict(), "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
           # torchrun from this environment, whether or not the shell that launched has it activated
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "launcher.supervisor", "--project", str(project_dir), "--run-id", plan.run_id]
    if chaos:
        command += ["--chaos", chaos]
    with open(record.log, "ab") as log:
        supervisor = subprocess.Popen(command, cwd=project_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    return registry.update(plan.run_id, handle={**record.handle, "supervisor_pid": supervisor.pid})


def status(registry: Registry, record: RunRecord) -> dict:
    """State (a supervisor that vanished without saying so is failed) and the trainer's step."""
    state = record.state
    if state not in TERMINAL_STATES and not _alive(record.handle.get("supervisor_pid")):
        state = "failed"
    progress = _progress(record)
    step = f"{progress['step']}/{progress['total']}" if progress else "-"
    return {"state": state, "step": step}


def logs(registry: Registry, record: RunRecord, follow: bool) -> Iterator[str]:
    """The supervisor's log; with `follow`, new lines until the run ends."""
    path = Path(record.log)
    with path.open(errors="replace") as source:
        while True:
            line = source.readline()
            if line:
                yield line
                continue
            if not follow or status(registry, registry.get(record.run_id))["state"] in TERMINAL_STATES:
                rest = source.read()
                if rest:
                    yield rest
                return
            time.sleep(0.2)


def stop(registry: Registry, record: RunRecord, grace: float = STOP_GRACE_SECONDS) -> str:
    """SIGTERM to the supervisor: the job checkpoints and exits, the run ends as stopped. Then, only if it is
    still there after the grace period, SIGKILL to everything it started."""
    pid = record.handle.get("supervisor_pid")
    if record.state in TERMINAL_STATES or not _alive(pid):
        return status(registry, record)["state"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        if record.handle.get("attempt"):
            processes.signal_marked(record.handle["attempt"], signal.SIGKILL)
    return status(registry, registry.get(record.run_id))["state"]


def _progress(record: RunRecord) -> dict:
    try:
        return json.loads((Path(record.local_dir) / record.run_id / job_contract.PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reap it if it has exited
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
