"""A run killed at any instant resumes from its newest complete checkpoint and ends bit for bit where an
uninterrupted run ends: weights, optimizer, scheduler, RNG and every logged loss."""

from __future__ import annotations

import random
import signal

import pytest

from spottrain_contract.job import PREEMPTED_EXIT_CODE
from tests.trainer.harness import STEPS, TrainingRun, assert_runs_match, resume_overrides

pytestmark = pytest.mark.slow


# Every ZeRO stage is resumed after SIGKILL: 3 here at a random step, 2 here while a checkpoint is written, 0
# five times over (SIGKILL and SIGTERM at random moments of training) by the chaos test in test_local_lifecycle.py.
@pytest.mark.parametrize("zero_stage", [3])
def test_sigkill_at_a_random_step_resumes_bitwise_equal(reference, zero_stage, tmp_path):
    ref = reference(zero_stage)
    run = TrainingRun(f"sigkill-zero{zero_stage}", tmp_path, resume_overrides(zero_stage))
    delay = random.Random(zero_stage).uniform(0.0, 0.6)
    run.run_until(lambda r: 4 in r.complete_steps(), signal.SIGKILL, delay=delay)
    assert run.complete_steps()[-1] < STEPS
    assert run.run() == 0, run.last_log()
    assert_runs_match(run, ref, STEPS)


@pytest.mark.parametrize("zero_stage", [2])
def test_sigkill_while_a_checkpoint_is_written_resumes_bitwise_equal(reference, zero_stage, tmp_path):
    ref = reference(zero_stage)
    run = TrainingRun(f"sigkill-save-zero{zero_stage}", tmp_path, resume_overrides(zero_stage))
    run.run_until(lambda r: r.local_step_started(8), signal.SIGKILL)
    assert 8 not in run.complete_steps() or run.complete_steps()[-1] == 8
    assert run.run() == 0, run.last_log()
    assert_runs_match(run, ref, STEPS)


def test_sigterm_checkpoints_and_exits_preempted_then_resumes_bitwise_equal(reference, tmp_path):
    ref = reference(2)
    run = TrainingRun("sigterm", tmp_path, resume_overrides(2))
    code = run.run_until(lambda r: 4 in r.complete_steps(), signal.SIGTERM)
    assert code == PREEMPTED_EXIT_CODE, run.last_log()
    stopped_at = run.complete_steps()[-1]
    assert 4 < stopped_at < STEPS, "the notice must produce a checkpoint of the step it interrupted"
    assert run.run() == 0, run.last_log()
    assert_runs_match(run, ref, STEPS)
    # each attempt says where its start-up went, at its first step: the resumed one restored a checkpoint
    restores = run.metric_history("perf/startup/restore_seconds")
    assert [step for step, _ in restores] == [1, stopped_at + 1]
    assert restores[1][1] > 0


def test_the_start_up_breakdown_adds_up_and_is_logged(reference):
    ref = reference(2)
    phases = ("imports", "setup", "model", "engine", "tracking", "restore", "first_step")
    seconds = {}
    for phase in (*phases, "total"):
        [(step, seconds[phase])] = ref.metric_history(f"perf/startup/{phase}_seconds")
        assert step == 1 and seconds[phase] >= 0, phase
    assert seconds["total"] == pytest.approx(sum(seconds[p] for p in phases))
    assert seconds["imports"] > 0.5  # the interpreter, torch and DeepSpeed: never free
    assert "start-up: imports " in "".join(log.read_text() for log in ref.root.glob("attempt-*.log"))


def _final_manifest_written(run: TrainingRun) -> bool:
    return STEPS in run.complete_steps()


def _export_started(run: TrainingRun) -> bool:
    return (run.store / run.run_id / "final-hf").is_dir()


@pytest.mark.parametrize("written", [_final_manifest_written, _export_started], ids=["after-final-manifest",
                                                                                     "during-export"])
def test_a_kill_after_the_final_checkpoint_is_finished_by_the_next_attempt(reference, written, tmp_path):
    """The final checkpoint alone is not the end: the next attempt restores it and does what follows (the
    export, the unsent metrics, the MLflow status)."""
    ref = reference(2)
    run = TrainingRun(f"final-{written.__name__.strip('_')}", tmp_path, resume_overrides(2))
    run.run_until(written, signal.SIGKILL)
    assert run.run() == 0, run.last_log()
    assert_runs_match(run, ref, STEPS)
    exported = {p.relative_to(run.store / run.run_id): p.read_bytes()
                for p in sorted((run.store / run.run_id / "final-hf").rglob("*")) if p.is_file()}
    expected = {p.relative_to(ref.store / ref.run_id): p.read_bytes()
                for p in sorted((ref.store / ref.run_id / "final-hf").rglob("*")) if p.is_file()}
    assert exported == expected
    _, mlflow_run = run._mlflow_run()
    assert mlflow_run.info.status == "FINISHED"


def test_the_node_refuses_a_resume_with_other_settings_unless_allowed_and_then_tags_the_change(tmp_path):
    from spottrain_contract.job import DO_NOT_RESTART_EXIT_CODE

    launched = TrainingRun("drift", tmp_path, resume_overrides(2))
    launched.run_until(lambda r: 4 in r.complete_steps(), signal.SIGKILL)
    resumed_at = launched.complete_steps()[-1]
    other_lr = (*resume_overrides(2), "train.optim.lr=0.5")

    refused = TrainingRun("drift", tmp_path, other_lr)
    assert refused.run() == DO_NOT_RESTART_EXIT_CODE, refused.last_log()
    assert "run drift was launched with other settings (train.optim.lr: 0.001 → 0.5)" in refused.last_log(whole=True)
    assert launched.complete_steps()[-1] == resumed_at  # nothing trained

    allowed = TrainingRun("drift", tmp_path, other_lr, changes=("train.optim.lr: 0.001 → 0.5",))
    assert allowed.run() == 0, allowed.last_log()
    _, mlflow_run = allowed._mlflow_run()
    changes = {k: v for k, v in mlflow_run.data.tags.items() if k.startswith("spottrain.change.")}
    assert changes == {f"spottrain.change.step-{resumed_at:08d}": "train.optim.lr: 0.001 → 0.5"}


def test_mlflow_tags_say_how_the_run_really_ran(reference):
    _, mlflow_run = reference(2)._mlflow_run()
    tags = mlflow_run.data.tags
    assert {k: tags[k] for k in ("target", "gpu", "gpus", "ranks", "nodes")} == {
        "target": "local", "gpu": "cpu", "gpus": "0", "ranks": "2", "nodes": "1"}  # not the recipe's 4× A100-80GB
