"""The chunked projection + cross-entropy equals the materialised one: values and gradients, to 1e-6 on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spottrain.linear_cross_entropy import LinearWithCrossEntropy, linear_cross_entropy, rows_per_chunk
from spottrain.tasks.wmtp.data import Batch
from spottrain.tasks.wmtp.losses import (mtp_loss, per_head_cross_entropy, per_token_weights_for_heads,
                                         target_aligned, weighted_mtp_loss)
from spottrain.tasks.wmtp.model import MultiTokenLM, load_causal_lm

ATOL = 1e-6


def reference_ce(hidden, weight, targets, bias=None):
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           reduction="none").view(targets.shape)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_values_and_gradients_equal_the_materialised_cross_entropy(chunk_rows, with_bias):
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(2, 5, 16), torch.randn(11, 16) / 4, torch.randn(11)
    targets = torch.randint(0, 11, (2, 5))
    token_weights = torch.rand(2, 5)  # a downstream weighting, as the WMTP tasks apply
    h1, w1, b1 = leaves(hidden, weight, bias)
    h2, w2, b2 = leaves(hidden, weight, bias)

    ours = linear_cross_entropy(h1, w1, targets, b1 if with_bias else None, chunk_rows=chunk_rows)
    theirs = reference_ce(h2, w2, targets, b2 if with_bias else None)
    (ours * token_weights).sum().backward()
    (theirs * token_weights).sum().backward()

    assert ours.dtype == torch.float32 and ours.shape == targets.shape
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    torch.testing.assert_close(h1.grad, h2.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(w1.grad, w2.grad, atol=ATOL, rtol=0)
    if with_bias:
        torch.testing.assert_close(b1.grad, b2.grad, atol=ATOL, rtol=0)


def test_bf16_logits_are_upcast_as_before():
    """In bf16 the logits are computed in bf16 (as nn.Linear does) and the softmax in fp32, as the loss did."""
    torch.manual_seed(1)
    hidden, weight = torch.randn(6, 32).bfloat16(), (torch.randn(50, 32) / 6).bfloat16()
    targets = torch.randint(0, 50, (6,))
    h1, w1 = leaves(hidden, weight)
    h2, w2 = leaves(hidden, weight)
    ours = linear_cross_entropy(h1, w1, targets, chunk_rows=4)
    theirs = reference_ce(h2, w2, targets)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    assert h1.grad.dtype == torch.bfloat16 and w1.grad.dtype == torch.bfloat16
    torch.testing.assert_close(h1.grad.float(), h2.grad.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(w1.grad.float(), w2.grad.float(), atol=1e-2, rtol=1e-2)


def test_chunks_hold_half_a_gigabyte_of_fp32_logits():
    assert rows_per_chunk(32000) == 4194
    assert rows_per_chunk(10**12) == 1


def test_the_module_returns_logits_without_targets_and_shares_the_parameter():
    linear = torch.nn.Linear(8, 5, bias=False)
    module = LinearWithCrossEntropy.replacing(linear)
    assert module.weight is linear.weight and module.bias is None
    x = torch.randn(3, 8)
    torch.testing.assert_close(module(x), linear(x))


def old_per_head_cross_entropy(logits, input_ids, response_mask):
    """The loss path before chunking: every head's [B, S, V] logits stacked, upcast and transposed."""
    ces, masks = [], []
    for k in range(logits.shape[2]):
        ces.append(F.cross_entropy(logits[:, :, k].float().transpose(1, 2), target_aligned(input_ids, k),
                                   reduction="none"))
        masks.append(target_aligned(response_mask, k))
    return torch.stack(ces, dim=2), torch.stack(masks, dim=2)


def test_every_wmtp_loss_and_its_gradients_equal_the_materialised_logits_path():
    torch.manual_seed(2)
    model = MultiTokenLM(load_causal_lm("micro", 40, seed=3), n_future=3)
    ids = torch.randint(0, 40, (2, 12))
    mask = torch.ones(2, 12)
    mask[:, :4] = 0
    mask[1, 10:] = 0
    batch = Batch(input_ids=ids, response_mask=mask, is_correct=torch.tensor([1.0, 0.0]))
    token_weights = per_token_weights_for_heads(torch.rand(2, 12) * 2, 3)

    def losses(chunked: bool):
        model.zero_grad()
        out = model(ids)
        if chunked:
            ce, ce_mask = per_head_cross_entropy(out, ids, mask)
        else:
            ce, ce_mask = old_per_head_cross_entropy(out.logits, ids, mask)
        weighted = weighted_mtp_loss(ce, ce_mask, token_weights)
        (weighted + mtp_loss(out, batch)).backward()
        return ce.detach(), weighted.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    ce, weighted, grads = losses(chunked=True)
    old_ce, old_weighted, old_grads = losses(chunked=False)
    torch.testing.assert_close(ce, old_ce, atol=ATOL, rtol=0)
    torch.testing.assert_close(weighted, old_weighted, atol=ATOL, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, old_grads[name], atol=ATOL, rtol=0, msg=name)
