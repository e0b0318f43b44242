"""Stage 1, baseline MTP: correct solutions only, every token weighted 1."""

from __future__ import annotations

from spottrain.pipelines.base import Pipeline


class BaselinePipeline(Pipeline):
    name = "baseline"

    def select(self, records):
        return [i for i, record in enumerate(records) if record["is_correct"]]

    def loss(self, model, batch):
        loss = self.validation_loss(model, batch)
        return loss, {"train/loss": loss.detach()}


def create(recipe) -> BaselinePipeline:
    return BaselinePipeline()
