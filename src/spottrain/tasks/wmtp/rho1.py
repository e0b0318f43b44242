"""Stage 4, Rho-1 WMTP: learn the tokens where the policy trails a frozen reference model most.

For head k the excess loss of a target token is e = CE_policy,k − CE_ref (the reference's next-token CE on the
same token). Hard selection keeps the top `k_percent` of valid tokens by e, per head, over the global batch
(all ranks); the loss divides by the number selected. Soft selection uses σ((e − τ)/temperature) with τ the
same threshold; hard is its limit as the temperature goes to 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from spottrain import runtime
from spottrain.tasks import LEARNING_RATE_METRIC, NO_RUN_TAGS
from spottrain.tasks.wmtp.data import Batch
from spottrain.linear_cross_entropy import linear_cross_entropy
from spottrain.tasks.wmtp.losses import mtp_loss, per_head_cross_entropy, shift_left, target_aligned
from spottrain.tasks.wmtp.micro import MICRO
from spottrain.tasks.wmtp.model import load_causal_lm
from spottrain.tasks.wmtp.workload import CodeMtpWorkload


class Rho1Task:
    learning_rate_metric = LEARNING_RATE_METRIC
    run_tags = NO_RUN_TAGS

    def __init__(self, train, ranks, files=None):
        self.work = CodeMtpWorkload(train, ranks)
        self.options, self.seed = train.rho1, train.seed
        self.reference = None

    def training_indices(self, epoch: int) -> list[int]:
        return self.work.correct_indices()

    def batch(self, indices):
        return self.work.train_set.batch(indices)

    def evaluate(self, model) -> dict[str, float]:
        return self.work.evaluate(lambda batch: mtp_loss(model(batch.input_ids), batch))

    def export(self, model, out_dir: Path) -> None:
        self.work.export(model, out_dir)

    def build_model(self):
        mtp_model = self.work.build_mtp_model()
        path = self.options.reference_model
        # The micro reference differs from the micro policy (another seed), as a real reference model would.
        reference = load_causal_lm(path, mtp_model.lm.config.vocab_size, self.seed + 1 if path == MICRO else self.seed,
                                   self.work.setup)
        self.reference = reference.eval().requires_grad_(False)
        return mtp_model

    def loss(self, model, batch: Batch):
        o = self.options
        ce, mask = per_head_cross_entropy(model(batch.input_ids), batch.input_ids, batch.response_mask)
        excess = ce.detach() - self.reference_ce(batch, ce.shape[2])
        weights = select_tokens(excess, mask, o.k_percent, o.selection, o.temperature,
                                gather=runtime.gather_across_ranks)
        selected = (weights * mask).sum(dim=(0, 1))
        loss = ((weights * ce * mask).sum(dim=(0, 1)) / selected.clamp_min(1e-8)).mean()
        count = mask.sum().clamp_min(1.0)
        return loss, {
            "train/loss": loss.detach(), "train/weighted_ce_loss": loss.detach(),
            "train/excess_loss_mean": (excess * mask).sum() / count,
            "train/weight_sparsity": 1 - (weights * mask).sum() / count,
        }

    @torch.no_grad()
    def reference_ce(self, batch: Batch, n_future: int) -> torch.Tensor:
        """[B, S, n]: the reference's next-token CE of the token head k predicts from position t (t + k + 1)."""
        hidden = self.reference.model(input_ids=batch.input_ids).last_hidden_state
        # CE at t of token t + 1, a chunk of rows at a time (the reference's [B, S, V] logits are never held)
        next_token_ce = linear_cross_entropy(hidden, self.reference.lm_head.weight, target_aligned(batch.input_ids, 0),
                                             self.reference.lm_head.bias)
        return torch.stack([shift_left(next_token_ce, k) for k in range(n_future)], dim=2)


def select_tokens(excess: torch.Tensor, mask: torch.Tensor, k_percent: float, selection: str,
                  temperature: float, gather=lambda values: values) -> torch.Tensor:
    """Weights [B, S, n] per head: τ is the ⌈k·N⌉-th largest valid excess over the global batch (`gather`
    collects every rank's valid values); hard keeps e ≥ τ, soft uses σ((e − τ)/temperature)."""
    weights = torch.zeros_like(excess)
    for k in range(excess.shape[2]):
        everyone = gather(excess[:, :, k][mask[:, :, k] > 0].float())
        if everyone.numel() == 0:
            continue
        keep = max(1, math.ceil(k_percent * everyone.numel()))
        threshold = torch.topk(everyone, keep).values[-1]
        head = excess[:, :, k].float()
        weights[:, :, k] = ((head >= threshold).float() if selection == "hard"
                            else torch.sigmoid((head - threshold) / temperature))
    return weights * mask
