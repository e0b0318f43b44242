"""Resuming on the capacity that came back: another number of ranks than the checkpoint was written by.

What stays: the global batch (the recipe's per_gpu × grad_accum × its GPUs × nodes), so gradient accumulation is
recomputed for the ranks present; the data order (the same global batches in the same order: the sampler cuts
each from the epoch's permutation); the LR schedule (saved and restored). What is resharded: weights and
optimizer state, through DeepSpeed's universal checkpoint (`ds_to_universal`, then a load that repartitions for
the new world size) for ZeRO 1–3; ZeRO 0 keeps the whole state in one file every world size reads.

What depends on the rank count: the order in which gradients are summed (fp32 results agree to rounding, not
bit for bit), and randomness drawn inside the model (dropout): each rank's RNG is derived from (seed, step, rank)
on such a resume, since there is no saved stream for a rank that did not exist.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Iterable

from spottrain import runtime
from spottrain_contract.errors import ConfigurationError

log = logging.getLogger(__name__)


def fitted_to_world(train, recipe_world: int, world: int):
    """`train` with grad_accum set so per_gpu × grad_accum × `world` is the recipe's global batch; unchanged when
    the job has the ranks the recipe asks for."""
    batch = train.batch
    global_batch = batch.per_gpu * batch.grad_accum * recipe_world
    if world == recipe_world:
        return train
    if global_batch % (batch.per_gpu * world):
        workable = [p for p in range(1, global_batch + 1) if global_batch % (p * world) == 0]
        raise ConfigurationError(
            f"train.batch: the global batch of {global_batch} (per_gpu {batch.per_gpu} × grad_accum "
            f"{batch.grad_accum} × {recipe_world} ranks) cannot be kept on the {world} ranks present with per_gpu "
            f"{batch.per_gpu}: per_gpu values that can are {', '.join(map(str, workable))}")
    accum = global_batch // (batch.per_gpu * world)
    log.warning("capacity: %d ranks present, the recipe asks for %d: grad_accum %d → %d keeps the global batch of "
                "%d", world, recipe_world, batch.grad_accum, accum, global_batch)
    return train.model_copy(update={"batch": batch.model_copy(update={"grad_accum": accum})})


def has_zero_shards(files: Iterable[str]) -> bool:
    """Whether a checkpoint of these files keeps ZeRO-partitioned optimizer state (ZeRO 1–3), which must be
    resharded (ZeRO 0 keeps the whole state in one file)."""
    return any(re.search(r"zero_pp_rank_\d+_mp_rank_\d+_optim_states\.pt$", name) for name in files)


def to_universal(step_dir: Path, out_dir: Path) -> None:
    """DeepSpeed's conversion of a ZeRO checkpoint into its universal format (one file per parameter and state,
    unpartitioned), which DeepSpeed loads on any world size. States DeepSpeed expects from Megatron-style
    clients and ours does not write are filled with its defaults (`inject_missing_state`)."""
    from deepspeed.checkpoint import ds_to_universal

    workers = max(1, min(8, (os.cpu_count() or 2) // 2))
    args = argparse.Namespace(input_folder=str(step_dir), output_folder=str(out_dir), num_extract_workers=workers,
                              num_merge_workers=workers, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    ds_to_universal.main(args)


def reseed_rank(seed: int, step: int, rank: int) -> None:
    import numpy as np

    runtime.seed_everything(int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0]))
