"""The weighted multi-token cross-entropy of PIPELINES.md, shared by every WMTP stage."""

from __future__ import annotations

import torch


def shift_left(values: torch.Tensor, n: int) -> torch.Tensor:
    """values[:, t + n] at position t, zero past the end."""
    shifted = torch.zeros_like(values)
    if n == 0:
        return values.clone()
    if values.shape[1] > n:
        shifted[:, : values.shape[1] - n] = values[:, n:]
    return shifted


def target_aligned(values: torch.Tensor, k: int) -> torch.Tensor:
    """values[:, t + k + 1] at position t: the token head k predicts from position t (zero past the end)."""
    return shift_left(values, k + 1)


def per_token_weights_for_heads(token_weights: torch.Tensor, n_future: int) -> torch.Tensor:
    """[B, S] weight of each token → [B, S, n]: head k at position t uses the weight of token t + k + 1."""
    return torch.stack([target_aligned(token_weights, k) for k in range(n_future)], dim=2)


def per_head_targets(input_ids: torch.Tensor, response_mask: torch.Tensor,
                     n_future: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and mask m_{t,k}, both [B, S, n]: head k at t predicts token t + k + 1; m is 0 on prompt and
    padding targets and past the end."""
    targets = torch.stack([target_aligned(input_ids, k) for k in range(n_future)], dim=2)
    mask = torch.stack([target_aligned(response_mask, k) for k in range(n_future)], dim=2)
    return targets, mask


def per_head_cross_entropy(out, input_ids: torch.Tensor,
                           response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE_{t,k} (fp32) and mask m_{t,k}, both [B, S, n], from a multi-token output (`MTPOutput`): the logits
    are computed a chunk of rows at a time and never held whole."""
    targets, mask = per_head_targets(input_ids, response_mask, out.hidden.shape[2])
    return out.cross_entropy(targets), mask


def weighted_mtp_loss(ce: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L = mean_k Σ_t w_{t,k} CE_{t,k} m_{t,k} / Σ_t m_{t,k}; weights are not renormalised."""
    per_head = (weights * ce * mask).sum(dim=(0, 1)) / mask.sum(dim=(0, 1)).clamp_min(1.0)
    return per_head.mean()


def mtp_loss(out, batch) -> torch.Tensor:
    """Unweighted multi-token CE of an `MTPOutput`: the baseline's loss and every stage's validation loss
    (comparable across stages, and it updates no running statistics)."""
    ce, mask = per_head_cross_entropy(out, batch.input_ids, batch.response_mask)
    return weighted_mtp_loss(ce, mask, torch.ones_like(ce))
