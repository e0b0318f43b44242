"""Stage 1, baseline MTP: correct solutions only, every token weighted 1."""

from __future__ import annotations

from pathlib import Path

from spottrain.tasks import LEARNING_RATE_METRIC, NO_RUN_TAGS
from spottrain.tasks.wmtp.losses import mtp_loss
from spottrain.tasks.wmtp.workload import CodeMtpWorkload


class BaselineTask:
    learning_rate_metric = LEARNING_RATE_METRIC
    run_tags = NO_RUN_TAGS

    def __init__(self, train, ranks, files=None):
        self.work = CodeMtpWorkload(train, ranks)

    def build_model(self):
        return self.work.build_mtp_model()

    def training_indices(self, epoch: int) -> list[int]:
        return self.work.correct_indices()

    def batch(self, indices):
        return self.work.train_set.batch(indices)

    def loss(self, model, batch):
        loss = mtp_loss(model(batch.input_ids), batch)
        return loss, {"train/loss": loss.detach()}

    def evaluate(self, model) -> dict[str, float]:
        return self.work.evaluate(lambda batch: mtp_loss(model(batch.input_ids), batch))

    def export(self, model, out_dir: Path) -> None:
        self.work.export(model, out_dir)
