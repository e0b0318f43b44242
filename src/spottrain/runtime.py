"""The process's place in the job (ranks from torchrun), seeding, and per-rank RNG state."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int
    local_rank: int
    world_size: int
    node: int = 0  # the node's place in the job (torchrun's GROUP_RANK); rank 0 is on node 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("GROUP_RANK", 0)))


def init_distributed() -> Ranks:
    """NCCL on GPUs, gloo on CPU, through DeepSpeed's comm layer (it wraps torch.distributed)."""
    import deepspeed

    ranks = Ranks.from_env()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", str(ranks.rank))
    os.environ.setdefault("LOCAL_RANK", str(ranks.local_rank))
    os.environ.setdefault("WORLD_SIZE", str(ranks.world_size))
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
    else:
        _without_cpu_inference_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return ranks


def _without_cpu_inference_comm_op() -> None:
    """On CPU, DeepSpeed's first init compiles a shared-memory all-reduce with gcc (~30 s on 2 cores, again
    whenever its build cache is cold or was built by another ninja). Only DeepSpeed's *inference* all-reduce
    uses it; training all-reduces go through torch.distributed (gloo). So CPU runs mark the op unavailable, in
    the table of compatible ops DeepSpeed itself consults before building it, and never build it."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def device_name() -> str:
    """What this rank computes on, as MLflow tags it: the GPU's model, or `cpu`."""
    return torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag true on every rank if it is true on any (one all-reduce for all): ranks stop, save or fail
    at the same step."""
    if not dist.is_initialized():
        return flags
    tensor = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


def mean_across_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().to(device()) for k in keys])
    if dist.is_initialized():
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def gather_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of any length from every rank (in rank order) on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    local = values.detach().to(device())
    count = torch.tensor([local.numel()], device=device())
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros(longest, dtype=local.dtype, device=device())
    padded[: local.numel()] = local
    gathered = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)])


def shared_token() -> str:
    """A random token chosen by rank 0 and known to every rank (one per process start)."""
    import uuid

    token = [uuid.uuid4().hex]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(token, src=0)
    return token[0]


def decided_by_rank_zero(decide: Callable[[], T]) -> T:
    """Rank 0's `decide()`, on every rank; what it raises is raised on every rank, so a check only rank 0 makes
    (the settings a run was launched with, read from the store) stops every rank at once the same way, instead
    of leaving the others in a collective until they time out."""
    import pickle

    outcome: list = [None]
    if not dist.is_initialized() or dist.get_rank() == 0:
        try:
            outcome = [("decided", decide())]
        except Exception as exc:
            try:
                pickle.dumps(exc)
                outcome = [("raised", exc)]
            except Exception:
                outcome = [("raised", RuntimeError(f"{type(exc).__name__}: {exc}"))]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


def leave_process_group() -> None:
    """Tear this rank's communication down before it exits on an error every rank raised, so the ranks leave
    cleanly instead of aborting in the communication library's threads."""
    if dist.is_initialized():
        dist.destroy_process_group()
