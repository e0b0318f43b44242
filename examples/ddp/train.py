"""Plain PyTorch DDP, spot-safe: a tiny regression MLP (with dropout) on generated data, resumable exactly.

    torchrun --nproc_per_node=2 examples/ddp/train.py --config config.yaml     (recipes/ddp_example.yaml)

Exact resumption needs everything the next step depends on in the checkpoint: the model, the optimizer, the
step, each rank's RNG (dropout draws from it), and the data order, which here is a function of the step (the batch
of step s on rank r is generated from (seed, s, r)), so nothing about the data needs saving. An interrupted and
resumed run ends with the same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from spottrain.integrations import script as spottrain


def load_config(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def make_model(model: dict) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(model["inputs"], model["hidden"]), torch.nn.ReLU(),
                               torch.nn.Dropout(model["dropout"]), torch.nn.Linear(model["hidden"], 1))


def batch(config: dict, step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of `step` on `rank`: a function of the step, so a resumed run continues the same sequence."""
    world = dist.get_world_size()
    generator = torch.Generator().manual_seed(config["seed"] * 1_000_003 + step * world + rank)
    x = torch.randn(config["train"]["batch_size"], config["model"]["inputs"], generator=generator)
    return x, x.sum(dim=1, keepdim=True).sin()


def save(path: Path, model, optimizer, step: int) -> None:
    """A checkpoint directory: the training state from rank 0, the RNG state from every rank."""
    rank = dist.get_rank()
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                   path / "train.pt")
    dist.barrier()
    torch.save(torch.get_rng_state(), path / f"rng-{rank}.pt")
    dist.barrier()  # complete on every rank before spottrain stages it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = load_config(parser.parse_args().config)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, train = dist.get_rank(), config["train"]
    torch.manual_seed(config["seed"])  # the same initial weights on every rank
    model = DistributedDataParallel(make_model(config["model"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=train["lr"])
    torch.manual_seed(config["seed"] + 1 + rank)  # each rank its own dropout
    step, resume, previous = 0, spottrain.resume_dir(), None
    if resume:
        state = torch.load(resume / "train.pt")
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        torch.set_rng_state(torch.load(resume / f"rng-{rank}.pt"))
    checkpoints = spottrain.checkpoint_dir("checkpoints")
    while step < train["steps"]:
        x, y = batch(config, step, rank)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        spottrain.report(step, train["steps"], **{"train/loss": loss.item()})
        stop = torch.tensor([int(spottrain.should_stop())])
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)  # every rank saves and stops at the same step
        if stop.item() or step % train["save_every"] == 0 or step == train["steps"]:
            save(checkpoints / f"step-{step}", model, optimizer, step)
            spottrain.checkpoint_saved(checkpoints / f"step-{step}", step)
            if rank == 0 and previous:  # the newest is enough to resume from (spottrain staged the older one)
                shutil.rmtree(previous, ignore_errors=True)
            previous = checkpoints / f"step-{step}"
        if stop.item():
            break
    if rank == 0 and step == train["steps"]:
        spottrain.export_dir().mkdir(parents=True, exist_ok=True)  # published as the run's final export
        torch.save(model.module.state_dict(), spottrain.export_dir() / "final.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
