"""`launch status RUN`'s ledger: the attempts' table, the totals, and the platform's own count beside them."""

from __future__ import annotations

import time

from launcher.views.ledger import ledger_text, run_ledger
from launcher.registry import LedgerSummary, Registry, RunRecord
from spottrain_contract.job import RunState
from spottrain_contract.ledger import FINISHED, PREEMPTED, RUNNING, Attempt, ledger_of
from spottrain_contract.store import open_store


def attempt(number, start_step, last_step, started, cause=RUNNING):
    return Attempt(number=number, started=started, start_step=start_step, world_size=4, device="NVIDIA A100",
                   gpus=4, last_step=last_step, last_seen=started + 60, ended=started + 60 if cause != RUNNING else None,
                   cause=cause, startup_seconds=12.0)


LEDGER = ledger_of([attempt(1, 0, 40, 0.0), attempt(2, 30, 60, 100.0, PREEMPTED), attempt(3, 60, 90, 200.0, FINISHED)])


def test_the_totals_follow_the_attempts_and_a_target_without_counts_adds_nothing():
    text = ledger_text(LEDGER)
    assert text.splitlines()[-1].startswith("3 attempts, 2 preempted or killed; goodput 90.0% (90 useful of 100 "
                                            "steps computed, 10 recomputed)")
    assert "killed" in text and "recovered" not in text


def test_skypilot_s_recoveries_confirm_the_kills_as_preemptions_or_name_the_difference():
    agreed = ledger_text(LEDGER, "SkyPilot", 2).splitlines()[-1]
    assert agreed == ("SkyPilot recovered the job 2 times, as the ledger counts: the 1 attempt killed without "
                      "notice was a preemption")
    differs = ledger_text(LEDGER, "SkyPilot", 3).splitlines()[-1]
    assert differs.startswith("SkyPilot recovered the job 3 times; the ledger saw 2 attempts preempted or killed")
    assert ledger_text(LEDGER, "SkyPilot", None) == ledger_text(LEDGER)  # the platform could not be asked


def test_reading_a_runs_ledger_keeps_its_summary_for_the_run_lists(tmp_path):
    registry = Registry(tmp_path / "project")
    store = tmp_path / "store"
    for run_id in ("read", "unstarted"):
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state=RunState.RUNNING, started=1.0,
                                store=str(store), local_dir="", tracking_uri=""))
    for view in LEDGER.attempts:
        open_store(str(store)).put_bytes(view.attempt.to_json(), f"read/ledger/{view.attempt.key_name}")
    before = time.time()
    assert run_ledger(registry, registry.get("read")).goodput == LEDGER.goodput
    cached = registry.get("read").ledger
    assert cached == LedgerSummary(goodput=0.9, device_hours=LEDGER.device_hours, device_unit="GPU", read=cached.read)
    assert cached.read >= before
    assert run_ledger(registry, registry.get("unstarted")).attempts == []
    assert registry.get("unstarted").ledger is None  # no attempt yet: nothing to show


def test_status_json_of_one_run_carries_the_goodput_its_table_prints(tmp_path, private_home):
    """`launch status RUN --json` reads the run's ledger as `launch status RUN` does, so the goodput the table's
    totals line says is in the JSON, even on the first read."""
    import json

    from launch_helpers import run_launch, write_project

    project = write_project(tmp_path / "project", {})
    store = tmp_path / "store"
    Registry(project).save(RunRecord(run_id="read", recipe="baseline", target="local", state=RunState.FINISHED,
                                     started=1.0, ended=2.0, store=str(store), local_dir="", tracking_uri=""))
    for view in LEDGER.attempts:
        open_store(str(store)).put_bytes(view.attempt.to_json(), f"read/ledger/{view.attempt.key_name}")
    done = run_launch("status", "read", "--json", home=private_home, cwd=project)  # the first read of its ledger
    assert done.returncode == 0, done.stderr
    [view] = json.loads(done.stdout)
    table = run_launch("status", "read", home=private_home, cwd=project)
    assert "goodput 90.0%" in table.stdout
    assert (view["goodput"], view["device_unit"]) == (0.9, "GPU")


def test_a_stopped_attempt_is_counted_as_stopped_not_as_preempted():
    from spottrain_contract.ledger import STOPPED

    ledger = ledger_of([attempt(1, 0, 40, 0.0, STOPPED), attempt(2, 40, 90, 100.0, FINISHED)])
    text = ledger_text(ledger)
    assert text.splitlines()[-1].startswith("2 attempts, 1 stopped, 0 preempted or killed; goodput 100.0% (90 useful "
                                            "of 90 steps computed, 0 recomputed)")
    assert " stopped " in text.splitlines()[1]  # the table's ENDED AS
    assert ledger_text(LEDGER).splitlines()[-1].startswith("3 attempts, 2 preempted or killed;")  # no stop: unsaid


def test_a_run_resumed_on_other_capacity_says_so_under_its_totals():
    from dataclasses import replace

    views = [attempt(1, 0, 40, 0.0, PREEMPTED), replace(attempt(2, 40, 90, 100.0, FINISHED), world_size=2, gpus=2)]
    assert ledger_text(ledger_of(views)).splitlines()[-1] == (
        "capacity: 4 ranks (NVIDIA A100) from attempt 1, 2 ranks (NVIDIA A100) from attempt 2")
    assert "capacity" not in ledger_text(LEDGER)
