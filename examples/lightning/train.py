"""Lightning, spot-safe: a tiny regression MLP on a generated stream of batches.

    torchrun --nproc_per_node=2 examples/lightning/train.py --config config.yaml    (recipes/lightning_example.yaml)

The spottrain lines: `SpottrainCallback(every_n_steps=...)` in the callbacks (it saves `last.ckpt` in spottrain's
checkpoint directory, and once more on a stop), and fit() resumes from `resume_dir()`.

Exact resumption: Lightning's checkpoint carries the model, the optimizer and the step, but not the RNG state, and
it restarts a plain DataLoader's epoch from its first batch. So the model draws no random numbers while training
(no dropout), and the data is a stream whose batch i on rank r is generated from (seed, i, r), started at the
restored step when Lightning asks for the loader (after restoring the checkpoint). With those two, an interrupted
and resumed run ends with the same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from spottrain.integrations import script as spottrain
from spottrain.integrations.lightning import SpottrainCallback


def load_config(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


class Stream(torch.utils.data.IterableDataset):
    """Batches from `start` on: batch i of `rank` is generated from (seed, i, rank)."""

    def __init__(self, config: dict, start: int, rank: int):
        self.config, self.start, self.rank = config, start, rank

    def __iter__(self):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        for index in itertools.count(self.start):
            generator = torch.Generator().manual_seed(self.config["seed"] * 1_000_003 + index * world + self.rank)
            x = torch.randn(self.config["data"]["batch_size"], self.config["model"]["inputs"], generator=generator)
            yield x, x.sum(dim=1, keepdim=True).sin()


class Regression(pl.LightningModule):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        hidden = config["model"]["hidden"]
        self.net = torch.nn.Sequential(torch.nn.Linear(config["model"]["inputs"], hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.config["train"]["lr"])

    def train_dataloader(self):
        # called after the checkpoint is restored: the stream continues at the step the last attempt saved
        start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        return torch.utils.data.DataLoader(Stream(self.config, start, self.global_rank), batch_size=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = load_config(parser.parse_args().config)
    pl.seed_everything(config["seed"])  # the same initial weights on every rank
    model = Regression(config)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this node
    trainer = pl.Trainer(accelerator="auto", devices=local,
                         num_nodes=int(os.environ.get("WORLD_SIZE", "1")) // local, strategy="ddp",
                         max_steps=config["train"]["steps"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[SpottrainCallback(every_n_steps=config["train"]["save_every"],
                                                      monitor="train/loss")])
    trainer.fit(model, ckpt_path=spottrain.resume_dir())
    if trainer.is_global_zero and trainer.global_step >= trainer.max_steps:  # not stopped early: the final weights
        spottrain.export_dir().mkdir(parents=True, exist_ok=True)  # published as the run's final export
        torch.save(model.state_dict(), spottrain.export_dir() / "final.pt")


if __name__ == "__main__":
    main()
