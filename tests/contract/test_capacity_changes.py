"""A resume may change where a run trains (GPUs, nodes, accelerator) but not what it trains: a capacity change
that keeps the global batch is no setting change, for the launcher's guard and the trainer's alike."""

from __future__ import annotations

from pathlib import Path

from spottrain_contract.recipe import capacity_changes, load_recipe, setting_changes

PROJECT = Path(__file__).resolve().parents[2]


def baseline(*overrides: str):
    return load_recipe("baseline", project_dir=PROJECT, overrides=list(overrides)).recipe


def test_fewer_gpus_with_the_global_batch_kept_is_capacity_not_a_setting():
    launched = baseline("resources.gpus=4", "train.batch.grad_accum=4")
    resumed = baseline("resources.gpus=2", "train.batch.grad_accum=8", "resources.accelerator=A100")
    assert setting_changes(launched, resumed) == []
    assert capacity_changes(launched, resumed) == ["resources.accelerator: A100-80GB → A100",
                                                   "resources.gpus: 4 → 2", "train.batch.grad_accum: 4 → 8"]


def test_a_capacity_change_that_changes_the_global_batch_is_a_setting_change():
    launched = baseline("resources.gpus=4", "train.batch.grad_accum=4")
    resumed = baseline("resources.gpus=2", "train.batch.grad_accum=4", "train.optim.lr=5e-5")
    assert capacity_changes(launched, resumed) == []
    assert [change.split(":")[0] for change in setting_changes(launched, resumed)] == ["resources.gpus",
                                                                                      "train.optim.lr"]
