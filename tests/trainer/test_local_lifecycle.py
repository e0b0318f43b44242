"""The local target as a user drives it from the shell: launch, status, logs --follow, stop; and a run that
survives repeated random kills (chaos mode) ending exactly where an uninterrupted one ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from spottrain_contract.ledger import read_ledger
from spottrain_contract.store import open_store
from tests.trainer.harness import LAUNCH, TrainingRun, assert_runs_match, launch

pytestmark = pytest.mark.slow

CHAOS_STEPS = 80  # ~12 s of training on 2 CPU ranks: five kills, each ≤ 2 s into an attempt, all land in it


def record(project: Path, run_id: str) -> dict:
    """The run's record in the project's run database, as a dict (the state as its value)."""
    from launcher.registry import Registry

    found = Registry(project).get(run_id)
    return {**asdict(found), "state": found.state.value}


def status_row(project: Path, run_id: str) -> list[str]:
    out = launch(project, "status", run_id).stdout.splitlines()
    assert out[0].split()[:7] == ["RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE"]
    return out[1].split()


def test_launch_status_logs_and_graceful_stop(project):
    started = launch(project, "recipe", "baseline", "--target", "local", "--detach", "--run-id", "lifecycle",
                     "--override", "train.max_steps=400", "--override", "train.epochs=40",
                     "--override", "train.checkpoint.every_steps=100")
    assert started.returncode == 0, started.stderr
    assert "launched lifecycle" in started.stdout

    deadline = time.monotonic() + 120
    while status_row(project, "lifecycle")[4] in ("-",) or int(status_row(project, "lifecycle")[4].split("/")[0]) < 5:
        assert time.monotonic() < deadline, launch(project, "logs", "lifecycle").stdout[-3000:]
        time.sleep(0.5)
    row = status_row(project, "lifecycle")
    assert row[:4] == ["lifecycle", "baseline", "local", "running"]

    # one live attempt per run id: the launcher refuses a second, and a second supervisor touches nothing
    before = record(project, "lifecycle")
    second = launch(project, "recipe", "baseline", "--target", "local", "--run-id", "lifecycle")
    assert (second.returncode, second.stderr.splitlines()[-1].split(" (")[0]) == (
        2, "error: run lifecycle is live on local")
    assert "stop it first (launch stop lifecycle) or follow it (launch logs lifecycle --follow)" in second.stderr
    supervisor = subprocess.run([sys.executable, "-m", "launcher.targets.local.supervisor", "--project", str(project), "--run-id",
                                 "lifecycle"], cwd=project, capture_output=True, text=True, timeout=60)
    assert (supervisor.returncode, supervisor.stderr.strip()) == (
        3, "[supervisor] run lifecycle already has a live supervisor: not starting a second one")
    assert record(project, "lifecycle")["handle"]["supervisor_pid"] == before["handle"]["supervisor_pid"]

    follower = subprocess.Popen([LAUNCH, "logs", "lifecycle", "--follow"], cwd=project, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "HOME": str(project)})
    stopped = launch(project, "stop", "lifecycle")
    assert stopped.stdout.strip() == "run lifecycle stopped", stopped.stderr
    followed, _ = follower.communicate(timeout=60)  # --follow ends by itself once the run has ended
    assert "preemption notice: checkpointed step" in followed
    log = (project / "runs" / "logs" / "lifecycle.log").read_text()
    for noise in ("SignalException", "Setting accelerator to CPU", "Setting OMP_NUM_THREADS"):  # the log keeps it
        assert noise in log and noise not in followed, noise
    stopped_at = int(re.search(r"checkpointed step (\d+)", followed).group(1))

    row = status_row(project, "lifecycle")
    assert row[3] == "stopped" and row[4] == f"{stopped_at}/400"
    store = project / "runs" / "store" / "lifecycle"
    assert (store / f"step-{stopped_at:08d}" / "MANIFEST.json").is_file(), "the stop must leave a checkpoint"


def test_chaos_kills_lose_nothing_and_end_bitwise_equal_to_an_uninterrupted_run(project, tmp_path_factory):
    overrides = ["--override", f"train.max_steps={CHAOS_STEPS}", "--override", "train.epochs=10",
                 "--override", "train.checkpoint.every_steps=5", "--override", "train.log_every_steps=1",
                 "--override", "train.deepspeed.zero_stage=0"]  # ZeRO 2 and 3 resume in test_resume.py
    chaotic = launch(project, "recipe", "baseline", "--target", "local", "--run-id", "chaos",
                     "--chaos", "kills=5,signals=KILL+TERM,every=0.5:2,seed=11", *overrides, timeout=600)
    assert chaotic.returncode == 0, chaotic.stdout[-3000:] + chaotic.stderr[-3000:]
    handle = record(project, "chaos")["handle"]
    assert handle["chaos_kills"] == 5
    assert record(project, "chaos")["state"] == "finished"
    log = (project / "runs" / "logs" / "chaos.log").read_text()
    assert len(re.findall(r"chaos: SIG(KILL|TERM) to the job [\d.]+ s into training", log)) == 5
    assert re.search(rf"run chaos finished: {CHAOS_STEPS} steps, \d+ computed \(\d+ recomputed\)", log)

    # the preemption ledger adds up: an entry per attempt, each kill's cause, computed = useful + recomputed
    ledger = read_ledger(open_store(str(project / "runs" / "store")), "chaos")
    signals = re.findall(r"chaos: SIG(KILL|TERM) to the job", log)
    assert len(ledger.attempts) == len(signals) + 1
    assert Counter(view.cause for view in ledger.attempts) == +Counter(
        {"killed": signals.count("KILL"), "preempted": signals.count("TERM"), "finished": 1})
    assert ledger.useful == CHAOS_STEPS and ledger.computed == ledger.useful + ledger.recomputed
    shown = launch(project, "status", "chaos").stdout
    assert f"goodput {ledger.goodput:.1%} ({CHAOS_STEPS} useful of {ledger.computed} steps computed" in shown
    assert "ATTEMPT" in shown and shown.count(" killed ") == signals.count("KILL")

    calm = launch(project, "recipe", "baseline", "--target", "local", "--run-id", "calm", *overrides, timeout=600)
    assert calm.returncode == 0, calm.stderr[-3000:]
    as_run = lambda run_id: TrainingRun(run_id, project / "runs", ())  # noqa: E731 - store/local under runs/
    assert_runs_match(as_run("chaos"), as_run("calm"), CHAOS_STEPS)
    [(step, goodput)] = as_run("chaos").metric_history("ledger/goodput")[-1:]
    assert (step, goodput) == (CHAOS_STEPS, pytest.approx(ledger.goodput))  # launch compare --all shows it too
    assert as_run("calm").metric_history("ledger/goodput") == [(CHAOS_STEPS, 1.0)]


def test_a_stopped_run_resumes_where_it_stopped_and_once_finished_is_not_started_again(project):
    overrides = ["--override", "train.max_steps=30", "--override", "train.checkpoint.every_steps=5"]
    started = launch(project, "recipe", "baseline", "--target", "local", "--detach", "--run-id", "again", *overrides)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 120
    while status_row(project, "again")[4] == "-" or int(status_row(project, "again")[4].split("/")[0]) < 3:
        assert time.monotonic() < deadline, launch(project, "logs", "again").stdout[-3000:]
        time.sleep(0.3)
    assert launch(project, "stop", "again").stdout.strip() == "run again stopped"
    stopped_at = int(status_row(project, "again")[4].split("/")[0])

    # a plain resume continues with the launch's own overrides (max_steps=30, not the recipe's 40)
    resumed = launch(project, "recipe", "baseline", "--target", "local", "--run-id", "again")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"steps {stopped_at}→30" in resumed.stdout
    assert "run again finished: 30 steps, " + f"{30 - stopped_at} computed (0 recomputed)" in resumed.stdout
    # the stop was a person's, not a preemption: its own cause in the ledger, its steps counted all the same
    ledger = read_ledger(open_store(str(project / "runs" / "store")), "again")
    assert [view.cause for view in ledger.attempts] == ["stopped", "finished"]
    assert "2 attempts, 1 stopped, 0 preempted or killed; goodput 100.0% (30 useful of 30 steps computed" in launch(
        project, "status", "again").stdout

    again = launch(project, "recipe", "baseline", "--target", "local", "--run-id", "again")
    assert again.stdout.splitlines()[-1] == ("run again already finished at step 30: nothing to resume "
                                             "(launch status again; final weights in its store's final-hf/)")
    assert "launched" not in again.stdout


def test_a_store_that_refuses_writes_fails_the_run_at_once_without_restarts(project):
    done = launch(project, "recipe", "baseline", "--target", "local", "--run-id", "refused",
                  "--override", "train.checkpoint.uri=/sys/spottrain-store")  # EPERM, even for root
    assert done.returncode == 1, done.stdout[-3000:]
    assert re.findall(r"\[supervisor\] attempt \d+: [^\n]*", done.stdout) == ["[supervisor] attempt 1: no step, exit code 78"]
    last = done.stdout.splitlines()[-1]  # the first rank to fail says why: either of the two
    assert re.match(r"run refused failed at step -: \[rank [01]\] train\.checkpoint\.uri: cannot write to the "
                    r"checkpoint store /sys/spottrain-store \(PermissionError: ", last), last
    assert last.endswith(f"(log {project / 'runs' / 'logs' / 'refused.log'})")
    assert done.stdout.count("cannot write to the checkpoint store") == 2  # the first failing rank's line, the last
    assert (record(project, "refused")["state"], record(project, "refused")["restarts"]) == ("failed", 0)
