"""`launch stop` of a local run whose supervisor another process started (the hub), and a stop that lands while the
job is still starting: both end the run `stopped`, at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.registry import Registry, RunRecord
from launcher.targets import local
from spottrain_contract.job import RunState

# the hub's part: start the supervisor in the background, print its pid, then never reap it (it stays a zombie
# once it exits, as under a hub that launched it and is busy serving pages)
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "launcher.targets.local.supervisor", "--project", sys.argv[1], "--run-id", sys.argv[2]],
                         stdin=subprocess.DEVNULL, stdout=open(sys.argv[3], "ab"), stderr=subprocess.STDOUT,
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.fixture
def supervised(tmp_path):
    """A run whose job is a shell still starting (`sleep`: dies of SIGTERM, as a trainer before its handler is
    set), under a supervisor that a separate parent process started and does not reap."""
    project = tmp_path / "project"
    project.mkdir()
    registry = Registry(project)
    log = tmp_path / "run.log"
    registry.save(RunRecord(run_id="stop-test", recipe="baseline", target="local", state=RunState.PENDING,
                            started=time.time(), store=str(tmp_path / "store"), local_dir=str(tmp_path / "local"),
                            tracking_uri="", log=str(log), project=str(project),
                            handle={"script": "sleep 60", "max_restarts_on_errors": 0}))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(project), "stop-test", str(log)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    pid = int(parent.stdout.readline())
    registry.update("stop-test", handle={"supervisor_pid": pid})
    deadline = time.monotonic() + 30
    while registry.get("stop-test").state is not RunState.RUNNING:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield registry
    parent.kill()
    parent.wait()


def test_stopping_a_run_another_process_supervises_returns_once_it_stopped(supervised):
    grace = 60.0
    began = time.monotonic()
    state = local.stop(supervised.get("stop-test"), grace=grace)
    assert state is RunState.STOPPED
    assert time.monotonic() - began < grace / 2  # it saw the supervisor end, not the grace run out


def test_a_job_killed_by_the_stop_while_starting_is_stopped_not_failed(supervised):
    local.stop(supervised.get("stop-test"), grace=60.0)
    record = supervised.get("stop-test")
    assert record.state is RunState.STOPPED
    assert record.handle["exit_code"] == -15
