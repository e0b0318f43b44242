"""Value-based token math shared by the critic and verifiable stages (PIPELINES.md, stages 2 and 3).

Every function works on [B, S] tensors with a response mask m (1 on response tokens, which are contiguous);
results are 0 outside the response. Values passed in are expected to be detached by the caller where the
contract says so.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def next_in_response(mask: torch.Tensor) -> torch.Tensor:
    """m[t + 1] at position t: 1 where the next token is still part of the response."""
    shifted = torch.zeros_like(mask)
    shifted[:, :-1] = mask[:, 1:]
    return shifted


def last_response_token(mask: torch.Tensor) -> torch.Tensor:
    return mask * (1 - next_in_response(mask))


def lambda_returns(values: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor, gamma: float,
                   lam: float) -> torch.Tensor:
    """G_T = R at the last response token; G_t = (1-λ)γ V_{t+1} + λγ G_{t+1} before it."""
    values, mask = values.float(), mask.float()
    follows = next_in_response(mask)
    returns = torch.zeros_like(values)
    later = torch.zeros_like(reward, dtype=values.dtype)
    for t in range(values.shape[1] - 1, -1, -1):
        value_next = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(later)
        g = torch.where(follows[:, t] > 0, (1 - lam) * gamma * value_next + lam * gamma * later, reward.float())
        returns[:, t] = g * mask[:, t]
        later = g
    return returns


def td_errors(values: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor, gamma: float,
              value_before: float = 0.5) -> torch.Tensor:
    """δ_t = γ V_t − V_{t−1} over the response (V_{−1} = 0.5 before its first token); δ_T = R − V_T at the last."""
    values, mask = values.float(), mask.float()
    previous = torch.full_like(values, value_before)
    previous[:, 1:] = torch.where(mask[:, :-1] > 0, values[:, :-1], previous[:, 1:])
    deltas = torch.where(last_response_token(mask) > 0, reward.float()[:, None] - values, gamma * values - previous)
    return deltas * mask


def generalized_advantages(deltas: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """A_t = δ_t + γλ A_{t+1}, computed backwards within each response."""
    follows = next_in_response(mask.float())
    advantages = torch.zeros_like(deltas)
    later = torch.zeros_like(deltas[:, 0])
    for t in range(deltas.shape[1] - 1, -1, -1):
        later = deltas[:, t] + gamma * lam * later * follows[:, t]
        advantages[:, t] = later * mask[:, t]
    return advantages


class RunningWhitening:
    """EMA of the mean and std of advantages over response tokens, all-reduced across ranks so every rank
    whitens alike. The first update takes the batch statistics as they are (warm-up). Saved in checkpoints."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.mean: Optional[float] = None
        self.std: Optional[float] = None

    def update(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        mask = mask.double()
        stats = torch.stack([(values.double() * mask).sum(), (values.double() ** 2 * mask).sum(), mask.sum()])
        if dist.is_initialized():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        total, total_sq, count = stats.tolist()
        if count == 0:
            return
        mean = total / count
        std = max(total_sq / count - mean * mean, 0.0) ** 0.5
        if self.mean is None:
            self.mean, self.std = mean, std
        else:
            self.mean = (1 - self.momentum) * self.mean + self.momentum * mean
            self.std = (1 - self.momentum) * self.std + self.momentum * std

    def whiten(self, values: torch.Tensor) -> torch.Tensor:
        """Before any statistics (every update so far saw only masked tokens) the advantages count as average:
        0, so their weights are exp(0) = 1."""
        if self.mean is None:
            return torch.zeros_like(values)
        return (values - self.mean) / (self.std + 1e-8)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.std = state["mean"], state["std"]


def exponential_weights(advantages: torch.Tensor, whitening: RunningWhitening, beta: float, low: float,
                        high: float) -> torch.Tensor:
    """w_t = clip(exp(whiten(A_t) / β), w_min, w_max)."""
    return torch.clamp(torch.exp(whitening.whiten(advantages) / beta), low, high)


def weight_entropy(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy of the weights normalised over response tokens: log(n) when uniform, 0 when one token has all."""
    w = weights * mask
    p = w / w.sum().clamp_min(1e-12)
    return -(p * torch.log(p.clamp_min(1e-12))).sum()
