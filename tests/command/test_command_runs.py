"""A command recipe's script under the node wrapper, launched here as a user launches it (`launch recipe NAME
--target local`): chaos kills mid-step and mid-save, the ledger, the one MLflow run, a refused store, a crash
before the first checkpoint, and a script without an integration."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.command.scripts import WITH_INTEGRATION, WITHOUT_INTEGRATION, recipe
from tests.trainer.harness import launch
from spottrain_contract import layout
from launcher.registry import Registry
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState
from spottrain_contract.ledger import PREEMPTED, read_ledger
from spottrain_contract.lookup import StoredRun
from spottrain_contract.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("team-project")
    (root / "recipes").mkdir()
    for script, source in (("train_spot", WITH_INTEGRATION), ("train_plain", WITHOUT_INTEGRATION)):
        (root / f"{script}.py").write_text(source)
        (root / "recipes" / f"{script}.yaml").write_text(recipe(script))
    return root


def _final_state(project: Path, run_id: str) -> dict:
    stored = StoredRun(open_store(str(project / "runs" / "store")), run_id)
    newest = stored.newest()
    assert newest is not None and newest.final and stored.completed() == newest.step
    [state_file] = [entry.path for entry in newest.files if entry.path.endswith("state.json")]
    return json.loads((project / "runs" / "store" / run_id / layout.step_tag(newest.step) / state_file).read_text())


def _uninterrupted_weight(steps: int = 40, lr: float = 0.5) -> float:
    """What the script computes in one go (the same float operations in the same order)."""
    weight = 0.0
    for step in range(1, steps + 1):
        weight += lr * math.sin(step)
    return weight


@pytest.fixture(scope="module")
def chaos(project) -> subprocess.CompletedProcess:
    done = launch(project, "recipe", "train_spot", "--target", "local", "--run-id", "chaos",
                  "--chaos", "kills=3,signals=KILL+TERM,every=0.4:2.5,seed=3")  # KILL, TERM, KILL
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_chaos_kills_and_notices_lose_nothing(project, chaos):
    assert re.search(r"finished: 40 steps, \d+ computed \(\d+ recomputed\), \d+ restarts, 3 chaos kills",
                     chaos.stdout), chaos.stdout[-2000:]
    assert _final_state(project, "chaos") == {"step": 40, "weight": _uninterrupted_weight()}
    export = project / "runs" / "store" / "chaos" / layout.FINAL_EXPORT / "weight.json"
    assert json.loads(export.read_text()) == {"weight": _uninterrupted_weight()}


def test_the_ledger_adds_up_and_a_notice_costs_no_step(project, chaos):
    ledger = read_ledger(open_store(str(project / "runs" / "store")), "chaos")
    assert len(ledger.attempts) >= 4 and ledger.useful == 40
    assert ledger.computed == ledger.useful + ledger.recomputed
    noticed = [view for view in ledger.attempts if view.cause == PREEMPTED]
    assert noticed and all(view.recomputed == 0 for view in noticed)  # checkpointed at the notice's step


def test_one_mlflow_run_holds_each_step_once_and_the_scripts_own_logging(project, chaos):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'runs' / 'local' / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "team/train_spot"]
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{MLFLOW_RUN_ID_TAG}` = 'chaos'")
    assert len(runs) == 1
    [run] = runs
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 41))
    assert run.data.tags["own.logging"] == "yes"
    assert run.data.metrics["ledger/goodput"] == pytest.approx(
        read_ledger(open_store(str(project / "runs" / "store")), "chaos").goodput)


def test_a_store_that_refuses_writes_stops_the_run_before_the_script_starts(project):
    started = project / "started"
    if started.exists():
        for marker in started.iterdir():
            marker.unlink()
    done = launch(project, "recipe", "train_spot", "--target", "local", "--run-id", "refused",
                  "--override", "train.checkpoint.uri=/sys/spottrain-store")  # EPERM, even for root
    assert done.returncode == 1
    assert re.findall(r"\[supervisor\] attempt \d+: [^\n]*", done.stdout) == [
        "[supervisor] attempt 1: no step, exit code 78"]
    assert re.match(r"run refused failed at step -: \[rank 0\] train\.checkpoint\.uri: cannot write to the "
                    r"checkpoint store /sys/spottrain-store", done.stdout.splitlines()[-1])
    assert not started.exists() or not any(started.iterdir())


def test_a_script_failing_before_its_first_checkpoint_fails_with_its_error(project):
    done = launch(project, "recipe", "train_spot", "--target", "local", "--run-id", "crash",
                  "--override", "config.crash=true", "--override", "resources.recovery.max_restarts_on_errors=0")
    assert done.returncode == 1
    assert re.match(r"run crash failed at step -: \[rank [01]\] ValueError: boom before the first checkpoint",
                    done.stdout.splitlines()[-1]), done.stdout[-2000:]


def test_a_ranks_do_not_restart_code_ends_the_run_without_a_restart(project):
    done = launch(project, "recipe", "train_spot", "--target", "local", "--run-id", "exit78",
                  "--override", "config.exit_code=78")
    assert done.returncode == 1
    assert re.findall(r"\[supervisor\] attempt \d+: [^\n]*", done.stdout) == [
        "[supervisor] attempt 1: no step, exit code 78"]  # read from torchrun's report: it exited 1


def test_a_script_without_integration_has_its_checkpoints_kept_and_hears_a_stop(project):
    finished = launch(project, "recipe", "train_plain", "--target", "local", "--run-id", "plain")
    assert finished.returncode == 0, finished.stdout[-3000:]
    stored = StoredRun(open_store(str(project / "runs" / "store")), "plain")
    assert stored.complete_steps()[-1] == 40 and stored.newest().final and stored.completed() == 40
    assert read_ledger(open_store(str(project / "runs" / "store")), "plain").useful == 40  # steps from checkpoints

    launch(project, "recipe", "train_plain", "--target", "local", "--run-id", "stopped", "--detach",
           "--override", "config.steps=400")
    deadline = time.monotonic() + 120
    while not StoredRun(open_store(str(project / "runs" / "store")), "stopped").complete_steps():
        assert time.monotonic() < deadline, "no checkpoint of the plain script reached the store"
        time.sleep(0.5)
    launch(project, "stop", "stopped")
    assert Registry(project).get("stopped").state is RunState.STOPPED  # the SIGTERM reached the script: it ended
