"""Stage 2, critic pretraining: a value head on the (frozen) trunk learns P(correct) per token.

`mse` fits V_t to the λ-return of the terminal reward R = is_correct; `pairwise` ranks a correct solution above
an incorrect one of the same length: −log σ(mean_t V(correct) − mean_t V(incorrect)). Correct and incorrect
samples are balanced. The trunk stays as loaded, so the head transfers unchanged to the verifiable stage's
policy, which starts from the same model; the head is saved beside every checkpoint for that stage to load.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from spottrain.tasks import LEARNING_RATE_METRIC, NO_RUN_TAGS
from spottrain.tasks.wmtp.data import Batch
from spottrain.tasks.wmtp.model import ValueHead, ValueModel
from spottrain.tasks.wmtp.value_math import lambda_returns
from spottrain.tasks.wmtp.workload import CodeMtpWorkload

VALUE_HEAD_FILE = "value_head"


class CriticTask:
    learning_rate_metric = LEARNING_RATE_METRIC
    run_tags = NO_RUN_TAGS

    def __init__(self, train, ranks, files=None):
        self.work = CodeMtpWorkload(train, ranks)
        self.options = train.critic
        self.partner: dict[int, int] = {}

    def training_indices(self, epoch: int) -> list[int]:
        return self.select(self.work.records)

    def select(self, records) -> list[int]:
        """Balanced correct and incorrect samples; for `pairwise`, correct ones that have a partner."""
        correct = [i for i, r in enumerate(records) if r["is_correct"]]
        incorrect = [i for i, r in enumerate(records) if not r["is_correct"]]
        if self.options.loss_type == "pairwise":
            self.partner = _length_matched_partners(records, correct, incorrect)
            return sorted(self.partner)
        n = min(len(correct), len(incorrect))
        return sorted(correct[:n] + incorrect[:n])

    def build_model(self):
        return value_model_on_frozen_trunk(self.work.build_mtp_model())

    def batch(self, indices):
        return self.make_batch(self.work.train_set, indices)

    def make_batch(self, dataset, indices):
        if self.options.loss_type == "pairwise":
            return dataset.batch(indices + [self.partner[i] for i in indices])
        return dataset.batch(indices)

    def loss(self, model, batch: Batch):
        _, values = model(batch.input_ids, with_logits=False)
        values = values.float()
        mask = batch.response_mask
        if self.options.loss_type == "mse":
            targets = lambda_returns(values.detach(), mask, batch.is_correct, self.options.gamma, self.options.lam)
            loss = ((values - targets) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)
        else:
            loss = pairwise_loss(values, mask)
        value_mean = (values.detach() * mask).sum() / mask.sum().clamp_min(1.0)
        return loss, {"train/value_loss": loss.detach(), "train/value_mean": value_mean}

    def evaluate(self, model) -> dict[str, float]:
        return self.work.evaluate(lambda batch: self.loss(model, batch)[0], self.make_batch)

    def export(self, model, out_dir: Path) -> None:
        self.work.export(model.mtp, out_dir)

    def checkpoint_modules(self, model):
        return {VALUE_HEAD_FILE: model.value_head}


def value_model_on_frozen_trunk(mtp_model) -> ValueModel:
    """The critic's model: the LM as loaded, frozen, with a new value head (the only part that learns)."""
    mtp_model.requires_grad_(False)
    return ValueModel(mtp_model, ValueHead(mtp_model.hidden_size))


def pairwise_loss(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows [0, n) are correct, rows [n, 2n) their incorrect partners: −log σ(mean V(correct) − mean V(incorrect))."""
    means = (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    n = means.shape[0] // 2
    return -F.logsigmoid(means[:n] - means[n:]).mean()


def _length_matched_partners(records, correct, incorrect) -> dict[int, int]:
    """Each correct solution paired with an incorrect one of the same task (else any), closest in length."""
    by_task: dict[str, list[int]] = {}
    for j in incorrect:
        by_task.setdefault(str(records[j].get("task_id", "")), []).append(j)
    partners = {}
    for i in correct:
        pool = by_task.get(str(records[i].get("task_id", ""))) or incorrect
        if pool:
            length = len(records[i]["output"])
            partners[i] = min(pool, key=lambda j: (abs(len(records[j]["output"]) - length), j))
    return partners
