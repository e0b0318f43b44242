"""A toy training task, as a team would add its own workload: one module, registered by one entry point line.

Linear regression on data generated from the seed: the options model says how much, the task builds the model,
the data, the loss, the evaluation and the export; the runtime does everything else (DeepSpeed, checkpoints,
resume, MLflow). torch is imported inside the methods: the launcher imports this module for the options model,
and rendering a recipe must never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from spottrain_contract.schema import PositiveInt, Strict
from spottrain_contract.tasks import TaskSpec

SPEC = TaskSpec(options="toy_task:ToyOptions", implementation="toy_task:ToyTask")


class ToyOptions(Strict):
    features: PositiveInt = Field(3, description="Inputs of the linear model.")
    samples: PositiveInt = Field(64, description="Generated training examples (a quarter more for validation).")


@dataclass
class ToyBatch:
    x: Any  # torch.Tensor [B, features]
    y: Any  # torch.Tensor [B]

    def to(self, device):
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyTask:
    def __init__(self, train, ranks, files=None):
        import torch

        self.ranks, self.zero_stage = ranks, train.deepspeed.zero_stage
        generator = torch.Generator().manual_seed(train.seed)
        self.true_weights = torch.randn(train.features, generator=generator)
        count = train.samples + train.samples // 4
        self.x = torch.randn(count, train.features, generator=generator)
        self.y = self.x @ self.true_weights
        self.train_count = train.samples

    def build_model(self):
        import torch

        return torch.nn.Linear(self.x.shape[1], 1, bias=False)

    def training_indices(self, epoch: int) -> list[int]:
        return list(range(self.train_count))

    def batch(self, indices):
        return ToyBatch(self.x[indices], self.y[indices])

    def loss(self, model, batch):
        loss = ((model(batch.x).squeeze(-1) - batch.y) ** 2).mean()
        return loss, {"train/loss": loss.detach()}

    def evaluate(self, model) -> dict[str, float]:
        from spottrain import runtime

        held_out = self.batch(list(range(self.train_count, len(self.x)))).to(runtime.device())
        return runtime.mean_across_ranks({"val/loss": self.loss(model, held_out)[0]})

    def export(self, model, out_dir: Path) -> None:
        import torch

        from spottrain.engine import consolidated_state_dict

        state = consolidated_state_dict(model, self.zero_stage, self.ranks.is_main)
        if self.ranks.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(state, out_dir / "toy.pt")
