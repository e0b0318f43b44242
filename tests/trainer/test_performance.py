"""train.performance: the knobs change how fast a step runs, never what it computes."""

from __future__ import annotations

import threading

import pytest
import torch

from spottrain.batches import StepBatches
from spottrain.model_setup import ModelSetup
from spottrain.sampler import StepSampler
from spottrain.tasks.wmtp.data import Batch
from spottrain.tasks.wmtp.losses import mtp_loss
from spottrain.tasks.wmtp.model import build_mtp_model
from spottrain.tasks.wmtp.micro import micro_config
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.recipe import load_recipe
from tests.trainer.test_checkpointer import PROJECT


class CountingTask:
    """Batches of the indices themselves; records which thread built each."""

    def __init__(self):
        self.built: list[tuple[list[int], str]] = []

    def batch(self, indices):
        self.built.append((list(indices), threading.current_thread().name))
        ids = torch.tensor([indices])
        return Batch(ids, torch.ones_like(ids, dtype=torch.float32), torch.ones(1))


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_prefetched_batches_are_the_sampler_s_in_order(ahead):
    sampler = StepSampler(lambda epoch: range(40), per_gpu=2, grad_accum=3, world_size=1, rank=0, seed=7)
    task = CountingTask()
    batches = StepBatches(task, sampler, torch.device("cpu"), total_steps=5, ahead=ahead)
    for step in range(5):
        got = [batch.input_ids[0].tolist() for batch in batches.of_step(step)]
        assert got == sampler.micro_batches(step)
    batches.close()
    # each micro-batch built once, in the loop's order, never past the end; off the loop's thread when ahead
    assert [indices for indices, _ in task.built] == [m for step in range(5) for m in sampler.micro_batches(step)]
    assert all(name.startswith("batches") for _, name in task.built) == (ahead > 0)


def _train(overrides=()):
    return load_recipe("baseline", project_dir=PROJECT, profile="local", overrides=list(overrides)).recipe.train


def test_a_flash_attention_kernel_that_is_not_installed_is_named_in_one_line():
    with pytest.raises(ConfigurationError, match=r"train.performance.attention: flash_attention_2 needs the "
                                                 r"flash_attn package"):
        ModelSetup.of(_train(["train.performance.attention=flash_attention_2"]))


def test_the_cpu_builds_in_fp32_whatever_the_precision():
    setup = ModelSetup.of(_train(["train.deepspeed.precision=bf16"]))
    assert (setup.dtype, setup.device.type, setup.attention) == (torch.float32, "cpu", "sdpa")


def test_activation_checkpointing_changes_no_loss_and_no_gradient():
    ids = torch.randint(0, 40, (2, 16))
    batch = Batch(ids, torch.ones(2, 16), torch.ones(2))

    def loss_and_grads(checkpointing: bool):
        setup = ModelSetup.of(_train([f"train.performance.activation_checkpointing={str(checkpointing).lower()}"]))
        model = build_mtp_model("micro", 3, 40, seed=5, setup=setup).train()
        loss = mtp_loss(model(ids), batch)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss, grads = loss_and_grads(True)
    plain_loss, plain_grads = loss_and_grads(False)
    torch.testing.assert_close(loss, plain_loss, atol=1e-6, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-6, rtol=0, msg=name)


def test_random_init_builds_the_architecture_of_a_config_directory(tmp_path):
    micro_config(50).save_pretrained(tmp_path)
    model = build_mtp_model(str(tmp_path), 2, 50, seed=1, init="random")
    same = build_mtp_model(str(tmp_path), 2, 50, seed=1, init="random")
    assert sum(p.numel() for p in model.parameters()) > 0
    for (name, a), (_, b) in zip(model.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), name  # from the seed: the same weights on every rank
    with pytest.raises(ConfigurationError, match="train.model.path: no Hugging Face model directory"):
        build_mtp_model(str(tmp_path / "missing"), 2, 50, seed=1)
