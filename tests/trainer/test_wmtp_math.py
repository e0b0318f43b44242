"""The formulas of PIPELINES.md on small hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spottrain.tasks.wmtp.model import MultiTokenLM, ValueHead, ValueModel, load_causal_lm
from spottrain.tasks.wmtp.data import Batch
from spottrain.tasks.wmtp.losses import (per_head_targets, per_token_weights_for_heads, target_aligned,
                                      weighted_mtp_loss)
from spottrain.tasks.wmtp.critic import pairwise_loss
from spottrain.tasks.wmtp.rho1 import select_tokens
from spottrain.tasks.wmtp.value_math import (RunningWhitening, exponential_weights, generalized_advantages,
                                            lambda_returns, td_errors, weight_entropy)

# One sequence: two prompt tokens, a three-token response, one pad.
MASK = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
VALUES = torch.tensor([[9.0, 9.0, 0.2, 0.4, 0.6, 9.0]])  # values outside the response must not matter
REWARD = torch.tensor([1.0])


def close(actual: torch.Tensor, expected) -> None:
    assert torch.allclose(actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-6), actual


def test_head_k_at_position_t_predicts_token_t_plus_k_plus_1():
    values = torch.tensor([[10.0, 11.0, 12.0, 13.0, 14.0]])
    close(target_aligned(values, 0), [[11.0, 12.0, 13.0, 14.0, 0.0]])
    close(target_aligned(values, 2), [[13.0, 14.0, 0.0, 0.0, 0.0]])


def test_cross_entropy_mask_drops_prompt_padding_and_targets_past_the_end():
    ids = torch.tensor([[1, 2, 3, 4, 5, 0]])
    targets, mask = per_head_targets(ids, MASK, 2)
    close(targets[0, :, 0].float(), [2, 3, 4, 5, 0, 0])
    close(targets[0, :, 1].float(), [3, 4, 5, 0, 0, 0])
    # head 0 at t predicts t+1: response targets are positions 2..4, so t = 1, 2, 3
    close(mask[0, :, 0], [0, 1, 1, 1, 0, 0])
    # head 1 at t predicts t+2: t = 0, 1, 2
    close(mask[0, :, 1], [1, 1, 1, 0, 0, 0])


def test_weighted_loss_averages_heads_of_weighted_ce_over_valid_tokens_without_renormalising():
    ce = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])  # [B=1, S=3, n=2]
    mask = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]])
    weights = torch.tensor([[[2.0, 1.0], [2.0, 1.0], [2.0, 3.0]]])
    # head 0: (2·1 + 2·3) / 2 = 4;  head 1: (1·2 + 1·4 + 3·6) / 3 = 8;  mean = 6
    close(weighted_mtp_loss(ce, mask, weights), 6.0)


def test_each_head_uses_the_weight_of_the_token_it_predicts():
    token_weights = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    heads = per_token_weights_for_heads(token_weights, 2)
    close(heads[0, :, 0], [2.0, 3.0, 4.0, 0.0])
    close(heads[0, :, 1], [3.0, 4.0, 0.0, 0.0])


def test_lambda_returns_bootstrap_from_the_next_value_and_end_at_the_reward():
    # γ=1, λ=0.5: G_4 = R = 1; G_3 = 0.5·0.6 + 0.5·1 = 0.8; G_2 = 0.5·0.4 + 0.5·0.8 = 0.6
    close(lambda_returns(VALUES, MASK, REWARD, gamma=1.0, lam=0.5), [[0, 0, 0.6, 0.8, 1.0, 0]])


def test_lambda_one_is_the_monte_carlo_return():
    close(lambda_returns(VALUES, MASK, torch.tensor([0.0]), gamma=1.0, lam=1.0), [[0, 0, 0, 0, 0, 0]])


def test_td_errors_start_from_one_half_and_end_at_the_reward():
    # δ_2 = V_2 − 0.5 = −0.3;  δ_3 = V_3 − V_2 = 0.2;  δ_4 = R − V_4 = 0.4
    close(td_errors(VALUES, MASK, REWARD, gamma=1.0), [[0, 0, -0.3, 0.2, 0.4, 0]])


def test_td_errors_discount_the_current_value():
    # γ = 0.5: δ_2 = 0.5·0.2 − 0.5 = −0.4;  δ_3 = 0.5·0.4 − 0.2 = 0
    close(td_errors(VALUES, MASK, REWARD, gamma=0.5), [[0, 0, -0.4, 0.0, 0.4, 0]])


def test_gae_accumulates_backwards_within_the_response():
    deltas = torch.tensor([[0, 0, -0.3, 0.2, 0.4, 0.0]])
    # γλ = 0.5: A_4 = 0.4; A_3 = 0.2 + 0.5·0.4 = 0.4; A_2 = −0.3 + 0.5·0.4 = −0.1
    close(generalized_advantages(deltas, MASK, gamma=1.0, lam=0.5), [[0, 0, -0.1, 0.4, 0.4, 0]])


def test_whitening_takes_the_first_batch_then_moves_by_the_momentum():
    whitening = RunningWhitening(momentum=0.1)
    whitening.update(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert (whitening.mean, whitening.std) == pytest.approx((2.0, 1.0))
    whitening.update(torch.tensor([[10.0, 10.0]]), torch.ones(1, 2))
    assert (whitening.mean, whitening.std) == pytest.approx((0.9 * 2 + 0.1 * 10, 0.9 * 1 + 0.1 * 0))
    close(whitening.whiten(torch.tensor([2.8])), [0.0])


def test_whitening_before_any_unmasked_token_weights_every_token_one():
    whitening = RunningWhitening(momentum=0.1)
    whitening.update(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2))  # a micro-batch of prompt tokens only
    weights = exponential_weights(torch.tensor([[0.7, -2.0]]), whitening, beta=0.9, low=0.1, high=5.0)
    close(weights, [[1.0, 1.0]])


def test_whitening_state_round_trips_through_a_checkpoint():
    whitening = RunningWhitening(0.1)
    whitening.update(torch.tensor([[0.5, 1.5]]), torch.ones(1, 2))
    restored = RunningWhitening(0.1)
    restored.load_state_dict(whitening.state_dict())
    assert restored.state_dict() == whitening.state_dict()


def test_weights_are_clipped_exponentials_of_whitened_advantages():
    whitening = RunningWhitening(0.1)
    whitening.mean, whitening.std = 0.0, 1.0
    weights = exponential_weights(torch.tensor([-10.0, 0.0, 0.5, 10.0]), whitening, beta=0.9, low=0.1, high=5.0)
    close(weights, [0.1, 1.0, math.exp(0.5 / 0.9), 5.0])


def test_weight_entropy_is_log_n_for_uniform_and_zero_for_one_token():
    mask = torch.ones(1, 4)
    assert weight_entropy(torch.ones(1, 4), mask).item() == pytest.approx(math.log(4))
    assert weight_entropy(torch.tensor([[0.0, 0.0, 3.0, 0.0]]), mask).item() == pytest.approx(0.0, abs=1e-6)


def test_pairwise_loss_prefers_correct_over_incorrect_by_mean_value():
    values = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # row 0 correct (mean 2), row 1 its partner (mean 0)
    mask = torch.ones(2, 2)
    close(pairwise_loss(values, mask), -math.log(1 / (1 + math.exp(-2.0))))


def test_hard_selection_keeps_the_top_k_percent_of_valid_tokens_per_head():
    excess = torch.tensor([[[1.0], [5.0], [2.0], [4.0], [3.0], [99.0]]])  # [B=1, S=6, n=1]
    mask = torch.tensor([[[1.0], [1.0], [1.0], [1.0], [1.0], [0.0]]])  # the 99 is padding
    close(select_tokens(excess, mask, 0.6, "hard", 1.0)[0, :, 0], [0, 1, 0, 1, 1, 0])


def test_soft_selection_is_a_sigmoid_around_the_same_threshold():
    excess = torch.tensor([[[1.0], [5.0], [2.0], [4.0], [3.0]]])
    mask = torch.ones(1, 5, 1)
    soft = select_tokens(excess, mask, 0.6, "soft", 2.0)[0, :, 0]
    close(soft, [1 / (1 + math.exp(-(e - 3.0) / 2.0)) for e in [1.0, 5.0, 2.0, 4.0, 3.0]])


def test_hard_selection_is_the_limit_of_soft_as_temperature_goes_to_zero():
    excess = torch.tensor([[[1.0], [5.0], [2.0], [4.0], [3.5]]])
    mask = torch.ones(1, 5, 1)
    soft = select_tokens(excess, mask, 0.4, "soft", 1e-4)
    hard = select_tokens(excess, mask, 0.4, "hard", 1.0)
    away_from_threshold = excess != 4.0  # at τ itself the limit is 1/2
    assert torch.allclose(soft[away_from_threshold], hard[away_from_threshold], atol=1e-6)


def test_selection_threshold_is_taken_over_the_global_batch():
    excess = torch.tensor([[[1.0], [2.0]]])
    other_ranks = torch.tensor([10.0, 11.0, 12.0])
    gather = lambda local: torch.cat([local, other_ranks])  # noqa: E731 - what all_gather returns
    # 5 tokens globally, keep ⌈0.6·5⌉ = 3: the threshold is 10, so none of this rank's tokens is kept
    close(select_tokens(excess, torch.ones(1, 2, 1), 0.6, "hard", 1.0, gather=gather)[0, :, 0], [0.0, 0.0])


def _tiny_value_model() -> ValueModel:
    torch.manual_seed(0)
    lm = load_causal_lm("micro", vocab_size=32, seed=0)
    mtp = MultiTokenLM(lm, n_future=2)
    return ValueModel(mtp, ValueHead(mtp.hidden_size))


@pytest.mark.parametrize("value_coef, reaches_value_head", [(0.0, False), (0.5, True)])
def test_no_cross_entropy_gradient_reaches_the_value_head_through_the_weights(value_coef, reaches_value_head):
    from spottrain_contract.wmtp import VerifiableOptions
    from spottrain.tasks.wmtp.verifiable import TdWeightedLoss

    loss_of = TdWeightedLoss(VerifiableOptions(critic_checkpoint="unused", value_coef=value_coef))
    model = _tiny_value_model()
    batch = Batch(torch.randint(3, 32, (2, 12)), torch.cat([torch.zeros(2, 4), torch.ones(2, 8)], dim=1),
                  torch.ones(2))
    loss, _ = loss_of(model, batch)
    loss.backward()
    grads = [p.grad for p in model.value_head.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads) == reaches_value_head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mtp.parameters())


def test_verifiable_without_a_critic_checkpoint_says_how_to_produce_one():
    from spottrain_contract.wmtp import VerifiableOptions
    from spottrain.tasks.wmtp.verifiable import TdWeightedLoss

    with pytest.raises(ValueError, match=r"run `launch recipe critic` first"):
        TdWeightedLoss(VerifiableOptions())


def test_critic_trains_only_the_value_head():
    from spottrain.tasks.wmtp.critic import value_model_on_frozen_trunk

    lm = load_causal_lm("micro", vocab_size=32, seed=0)
    model = value_model_on_frozen_trunk(MultiTokenLM(lm, 2))
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"value_head"}


def test_value_head_shape_is_hidden_quarter_eighth_one():
    head = ValueHead(64)
    linears = [m for m in head.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 8), (8, 1)]
    assert all(isinstance(m, nn.GELU) for m in head.net if not isinstance(m, nn.Linear))
