"""What every pipeline shares: the contract the loop calls, and the weighted multi-token CE of PIPELINES.md."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from spottrain.data import Batch, EncodedDataset


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

    def make_batch(self, dataset: EncodedDataset, indices: list[int]) -> Batch:
        """The micro-batch for these sampled indices (pairwise stages add each sample's partner)."""
        return dataset.batch(indices)

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def validation_loss(self, model, batch: Batch) -> torch.Tensor:
        """Unweighted multi-token CE: comparable across stages, and it updates no running statistics."""
        logits = self.mtp_outputs(model, batch).logits
        ce, mask = per_head_cross_entropy(logits, batch.input_ids, batch.response_mask)
        return weighted_mtp_loss(ce, mask, torch.ones_like(ce))

    def mtp_outputs(self, model, batch: Batch):
        return model(batch.input_ids)

    def checkpoint_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """Small modules saved beside each checkpoint as safetensors (e.g. the critic's value head, which the
        verifiable stage starts from)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


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
