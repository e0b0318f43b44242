"""What every WMTP stage composes: code-solution records and their encodings, the multi-token model, the
validation loop and the final `from_pretrained` export."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from spottrain import runtime
from spottrain.engine import consolidated_state_dict
from spottrain.model_setup import ModelSetup
from spottrain.runtime import Ranks
from spottrain.tasks.wmtp.data import GENERATED, Batch, EncodedDataset, load_records
from spottrain.tasks.wmtp.model import MultiTokenLM, build_mtp_model, export_pretrained, load_tokenizer


class CodeMtpWorkload:
    def __init__(self, train, ranks: Ranks):
        self.train, self.ranks = train, ranks
        self.setup = ModelSetup.of(train)
        self.tokenizer = load_tokenizer(train.model.path)
        self.records, val_records = _records(train)
        self.train_set = EncodedDataset(self.records, self.tokenizer, train.data.max_length)
        self.val_set = EncodedDataset(val_records, self.tokenizer, train.data.max_length)

    def correct_indices(self) -> list[int]:
        return [i for i, record in enumerate(self.records) if record["is_correct"]]

    def build_mtp_model(self) -> MultiTokenLM:
        model = self.train.model
        return build_mtp_model(model.path, model.n_future_tokens, len(self.tokenizer), self.train.seed,
                               self.setup, model.init)

    @torch.no_grad()
    def evaluate(self, validation_loss: Callable[[Batch], torch.Tensor],
                 make_batch: Callable[[EncodedDataset, list[int]], Batch] = EncodedDataset.batch) -> dict[str, float]:
        """Mean validation loss over the first val_samples records, the same number of batches on every rank."""
        ranks, per_gpu = self.ranks, self.train.batch.per_gpu
        count = (min(len(self.val_set), self.train.data.val_samples) // ranks.world_size) * ranks.world_size
        mine = list(range(ranks.rank, count, ranks.world_size))
        total, seen = torch.zeros((), device=runtime.device()), 0
        for start in range(0, len(mine), per_gpu):
            indices = mine[start:start + per_gpu]
            batch = make_batch(self.val_set, indices).to(runtime.device())
            total += validation_loss(batch).float() * len(indices)
            seen += len(indices)
        return runtime.mean_across_ranks({"val/loss": total / max(1, seen)})

    def export(self, mtp: MultiTokenLM, out_dir: Path) -> None:
        """Consolidate the weights (gathering ZeRO-3 partitions) and write a from_pretrained directory."""
        state = consolidated_state_dict(mtp, self.train.deepspeed.zero_stage, self.ranks.is_main)
        if self.ranks.is_main:
            export_pretrained(mtp, state, self.tokenizer, out_dir)


def _records(train) -> tuple[list[dict], list[dict]]:
    """Training records (at most n_samples) and validation records (a held-out tail of train when unset)."""
    data = train.data
    records = load_records(data.train, split="train", seed=train.seed)
    if data.val:
        val = load_records(data.val, split="val", seed=train.seed)
    elif data.train == GENERATED:
        val = load_records(GENERATED, split="val", seed=train.seed)
    else:
        held_out = max(1, min(data.val_samples, len(records) // 20))
        records, val = records[:-held_out], records[-held_out:]
    if data.n_samples:
        records = records[: data.n_samples]
    return records, val
