"""What every pipeline shares: the contract the loop calls, and the weighted multi-token CE of PIPELINES.md."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from spottrain.data import Batch


class Pipeline:
    """A stage's part of training. The loop calls these; everything else (engine, data order, checkpoints,
    tracking) is the runtime's. State returned by `state_dict` is saved in every checkpoint."""

    name = "pipeline"
    best_metric_default = "val/loss"

    def select(self, records: list[dict]) -> list[int]:
        """Indices of the training records this stage learns from."""
        return list(range(len(records)))

    def build_model(self, mtp_model: torch.nn.Module, context: dict) -> torch.nn.Module:
        """The module DeepSpeed trains; by default the multi-token LM itself."""
        return mtp_model

    def mtp_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The multi-token LM inside the trained module (exported at the end)."""
        return model

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def validation_loss(self, model, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch)[0]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def target_aligned(values: torch.Tensor, k: int) -> torch.Tensor:
    """values[:, t + k + 1] at position t (zero past the end): what head k predicts from position t."""
    shifted = torch.zeros_like(values)
    if values.shape[1] > k + 1:
        shifted[:, : values.shape[1] - k - 1] = values[:, k + 1:]
    return shifted


def per_head_cross_entropy(logits: torch.Tensor, input_ids: torch.Tensor,
                           response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE_{t,k} and mask m_{t,k}, both [B, S, n]. m is 0 on prompt and padding targets and past the end."""
    n_future = logits.shape[2]
    ces, masks = [], []
    for k in range(n_future):
        targets = target_aligned(input_ids, k)
        ce = F.cross_entropy(logits[:, :, k].float().transpose(1, 2), targets, reduction="none")
        ces.append(ce)
        masks.append(target_aligned(response_mask, k))
    return torch.stack(ces, dim=2), torch.stack(masks, dim=2)


def weighted_mtp_loss(ce: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L = mean_k Σ_t w_{t,k} CE_{t,k} m_{t,k} / Σ_t m_{t,k}; weights are not renormalised."""
    per_head = (weights * ce * mask).sum(dim=(0, 1)) / mask.sum(dim=(0, 1)).clamp_min(1.0)
    return per_head.mean()
