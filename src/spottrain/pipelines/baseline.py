"""Stage 1, baseline MTP: correct solutions only, every token weighted 1."""

from __future__ import annotations

import torch

from spottrain.pipelines.base import Pipeline, per_head_cross_entropy, weighted_mtp_loss


class BaselinePipeline(Pipeline):
    name = "baseline"

    def select(self, records):
        return [i for i, record in enumerate(records) if record["is_correct"]]

    def loss(self, model, batch):
        ce, mask = per_head_cross_entropy(model(batch.input_ids).logits, batch.input_ids, batch.response_mask)
        loss = weighted_mtp_loss(ce, mask, torch.ones_like(ce))
        return loss, {"train/loss": loss.detach()}


def create(recipe) -> BaselinePipeline:
    return BaselinePipeline()
