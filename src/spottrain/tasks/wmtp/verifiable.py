"""Stage 3, verifiable WMTP: tokens weighted by the critic's TD errors (PIPELINES.md, stage 3).

The value head sits on the policy trunk, initialised from the critic's best checkpoint. Values are detached
before weights are computed, so no cross-entropy gradient reaches V through the weights; V learns only from
its own λ-return regression, scaled by `value_coef`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from spottrain.tasks import LEARNING_RATE_METRIC, NO_RUN_TAGS
from spottrain.tasks.wmtp.critic import VALUE_HEAD_FILE
from spottrain.tasks.wmtp.data import Batch
from spottrain.tasks.wmtp.losses import (mtp_loss, per_head_cross_entropy, per_token_weights_for_heads,
                                         weighted_mtp_loss)
from spottrain.tasks.wmtp.model import ValueHead, ValueModel
from spottrain.tasks.wmtp.value_math import (RunningWhitening, exponential_weights, generalized_advantages,
                                             lambda_returns, td_errors, weight_entropy)
from spottrain.tasks.wmtp.workload import CodeMtpWorkload
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.store import open_store

NO_CRITIC = ("train.verifiable.critic_checkpoint: the verifiable stage starts from the critic's best checkpoint "
             "and none was given: run `launch recipe critic` first (the launcher then finds it), or pass "
             "--override train.verifiable.critic_checkpoint=<store>/<critic run id>/step-NNNNNNNN")


class VerifiableTask:
    learning_rate_metric = LEARNING_RATE_METRIC
    run_tags = NO_RUN_TAGS

    def __init__(self, train, ranks, files=None):
        self.objective = TdWeightedLoss(train.verifiable)
        self.work = CodeMtpWorkload(train, ranks)
        self.options, self.endpoint_url = train.verifiable, train.checkpoint.endpoint_url

    def training_indices(self, epoch: int) -> list[int]:
        return self.work.correct_indices()

    def build_model(self):
        mtp_model = self.work.build_mtp_model()
        head = ValueHead(mtp_model.hidden_size)
        head.load_state_dict(load_value_head(self.options.critic_checkpoint, self.endpoint_url))
        return ValueModel(mtp_model, head)

    def batch(self, indices):
        return self.work.train_set.batch(indices)

    def evaluate(self, model) -> dict[str, float]:
        return self.work.evaluate(lambda batch: mtp_loss(model(batch.input_ids)[0], batch))

    def export(self, model, out_dir: Path) -> None:
        self.work.export(model.mtp, out_dir)

    def loss(self, model, batch: Batch):
        return self.objective(model, batch)

    def state_dict(self):
        return self.objective.state_dict()

    def load_state_dict(self, state):
        self.objective.load_state_dict(state)


class TdWeightedLoss:
    """Weighted MTP CE with TD-error token weights plus the value regression; its running whitening of the
    advantages is state that every checkpoint keeps."""

    def __init__(self, options):
        if not options.critic_checkpoint:
            raise ConfigurationError(NO_CRITIC)
        self.options = options
        self.whitening = RunningWhitening(options.ema_momentum)

    def __call__(self, model, batch: Batch):
        out, values = model(batch.input_ids)
        o, mask, reward = self.options, batch.response_mask, batch.is_correct
        detached = values.detach().float()
        deltas = td_errors(detached, mask, reward, o.gamma)
        advantages = generalized_advantages(deltas, mask, o.gamma, o.lam)
        self.whitening.update(advantages, mask)
        token_weights = exponential_weights(advantages, self.whitening, o.beta, *o.weight_clip)
        token_weights = torch.where(mask > 0, token_weights, torch.ones_like(token_weights))

        ce, ce_mask = per_head_cross_entropy(out, batch.input_ids, mask)
        ce_loss = weighted_mtp_loss(ce, ce_mask, per_token_weights_for_heads(token_weights, ce.shape[2]))
        targets = lambda_returns(detached, mask, reward, o.gamma, o.lam)
        count = mask.sum().clamp_min(1.0)
        value_loss = ((values.float() - targets) ** 2 * mask).sum() / count
        loss = ce_loss + o.value_coef * value_loss
        return loss, {
            "train/loss": loss.detach(), "train/weighted_ce_loss": ce_loss.detach(),
            "train/value_loss": value_loss.detach(), "train/td_error_mean": (deltas * mask).sum() / count,
            "train/weight_mean": (token_weights * mask).sum() / count,
            "train/weight_entropy": weight_entropy(token_weights, mask),
        }

    def state_dict(self):
        return {"whitening": self.whitening.state_dict()}

    def load_state_dict(self, state):
        self.whitening.load_state_dict(state["whitening"])


def load_value_head(checkpoint_uri: str, endpoint_url=None) -> dict[str, torch.Tensor]:
    """The critic's value head saved beside its checkpoint (a local step directory or an s3:// one)."""
    from safetensors.torch import load

    data = open_store(checkpoint_uri.rstrip("/"), endpoint_url).get_bytes(f"{VALUE_HEAD_FILE}.safetensors")
    if data is None:
        raise ConfigurationError(f"train.verifiable.critic_checkpoint: no {VALUE_HEAD_FILE}.safetensors in "
                                f"{checkpoint_uri} (is it a critic checkpoint?)")
    return load(data)
