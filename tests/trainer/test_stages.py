"""Each WMTP stage runs end to end on the micro model, logs its metrics, and resumes bit for bit after a
SIGKILL: the verifiable stage's running whitening statistics and the Rho-1 reference model included."""

from __future__ import annotations

import json
import signal

import pytest

from tests.trainer.harness import TrainingRun, assert_runs_match

pytestmark = pytest.mark.slow

STEPS = 8
OVERRIDES = (f"train.max_steps={STEPS}", "train.checkpoint.every_steps=4", "train.eval.every_steps=4",
             "train.log_every_steps=1")
METRICS = {
    "critic": {"train/value_loss", "train/value_mean", "val/loss"},
    "verifiable": {"train/td_error_mean", "train/weight_mean", "train/weight_entropy", "train/value_loss",
                   "val/loss"},
    "rho1": {"train/excess_loss_mean", "train/weight_sparsity", "train/weighted_ce_loss", "val/loss"},
}


@pytest.fixture(scope="module")
def stage_reference(tmp_path_factory):
    """stage_reference(stage): the stage's uninterrupted run, built once; the critic's also gives the verifiable
    stage its critic checkpoint (its best step)."""
    runs: dict[str, TrainingRun] = {}

    def get(stage: str) -> TrainingRun:
        if stage not in runs:
            run = TrainingRun(f"{stage}-reference", tmp_path_factory.mktemp(stage), stage_overrides(stage, get),
                              recipe=stage)
            assert run.run() == 0, run.last_log()
            runs[stage] = run
        return runs[stage]

    return get


def stage_overrides(stage: str, stage_reference) -> tuple[str, ...]:
    if stage != "verifiable":
        return OVERRIDES
    critic = stage_reference("critic")
    best = json.loads((critic.store / critic.run_id / "BEST.json").read_text())["step"]
    return OVERRIDES + (f"train.verifiable.critic_checkpoint={critic.store}/{critic.run_id}/step-{best:08d}",)


@pytest.mark.parametrize("stage", ["critic", "verifiable", "rho1"])
def test_stage_logs_its_metrics_and_resumes_bitwise_after_sigkill(stage, stage_reference, tmp_path):
    reference = stage_reference(stage)
    assert METRICS[stage] <= reference.training_metrics()

    killed = TrainingRun(f"{stage}-killed", tmp_path, stage_overrides(stage, stage_reference), recipe=stage)
    killed.run_until(lambda r: 4 in r.complete_steps(), signal.SIGKILL)
    assert killed.complete_steps()[-1] < STEPS, "the kill must land before the run ends"
    assert killed.run() == 0, killed.last_log()
    assert_runs_match(killed, reference, STEPS)
