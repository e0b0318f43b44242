"""Stage 3, verifiable WMTP: tokens weighted by the critic's TD errors (PIPELINES.md, stage 3).

The value head sits on the policy trunk, initialised from the critic's best checkpoint. Values are detached
before weights are computed, so no cross-entropy gradient reaches V through the weights; V learns only from
its own λ-return regression, scaled by `value_coef`.
"""

from __future__ import annotations

import torch

from spottrain.checkpoint.store import open_store
from spottrain.data import Batch
from spottrain.model import ValueHead, ValueModel
from spottrain.pipelines.base import (Pipeline, per_head_cross_entropy, per_token_weights_for_heads,
                                      weighted_mtp_loss)
from spottrain.pipelines.critic import VALUE_HEAD_FILE
from spottrain.pipelines.value_math import (RunningWhitening, exponential_weights, generalized_advantages,
                                            lambda_returns, td_errors, weight_entropy)

NO_CRITIC = ("train.verifiable.critic_checkpoint: the verifiable stage starts from the critic's best checkpoint "
             "and none was given: run `launch recipe critic` first (the launcher then finds it), or pass "
             "--override train.verifiable.critic_checkpoint=<store>/<critic run id>/step-NNNNNNNN")


class VerifiablePipeline(Pipeline):
    name = "verifiable"

    def __init__(self, options, endpoint_url=None):
        if not options.critic_checkpoint:
            raise ValueError(NO_CRITIC)
        self.options, self.endpoint_url = options, endpoint_url
        self.whitening = RunningWhitening(options.ema_momentum)

    def select(self, records):
        return [i for i, record in enumerate(records) if record["is_correct"]]

    def build_model(self, mtp_model, context):
        head = ValueHead(mtp_model.hidden_size)
        head.load_state_dict(load_value_head(self.options.critic_checkpoint, self.endpoint_url))
        return ValueModel(mtp_model, head)

    def mtp_model(self, model):
        return model.mtp

    def mtp_outputs(self, model, batch):
        return model(batch.input_ids)[0]

    def loss(self, model, batch: Batch):
        out, values = model(batch.input_ids)
        o, mask, reward = self.options, batch.response_mask, batch.is_correct
        detached = values.detach().float()
        deltas = td_errors(detached, mask, reward, o.gamma)
        advantages = generalized_advantages(deltas, mask, o.gamma, o.lam)
        self.whitening.update(advantages, mask)
        token_weights = exponential_weights(advantages, self.whitening, o.beta, *o.weight_clip)
        token_weights = torch.where(mask > 0, token_weights, torch.ones_like(token_weights))

        ce, ce_mask = per_head_cross_entropy(out.logits, batch.input_ids, mask)
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
        raise FileNotFoundError(f"train.verifiable.critic_checkpoint: no {VALUE_HEAD_FILE}.safetensors in "
                                f"{checkpoint_uri} (is it a critic checkpoint?)")
    return load(data)


def create(recipe) -> VerifiablePipeline:
    return VerifiablePipeline(recipe.train.verifiable, recipe.train.checkpoint.endpoint_url)
