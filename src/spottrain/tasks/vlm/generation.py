"""Evaluation by generation: every rank answers its share of the test rows, rank 0 gathers the answers in row
order and scores them against the annotations (`metrics.generation_metrics`).

Shares are equal in length (the last row repeated where the rows do not divide), so every rank calls
generate() as often as the others: under ZeRO-3 each forward gathers parameters from every rank, and
transformers' `synced_gpus` keeps ranks stepping together until the slowest has finished its batch.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from spottrain import runtime
from spottrain.tasks.vlm.data import Example
from spottrain.tasks.vlm.metrics import generation_metrics

PREDICTIONS, METRICS = "predictions.jsonl", "generation_metrics.json"


def generate_answers(model, examples: Sequence[Example], answer: Callable[[list[Example]], list[str]],
                     batch_size: int, ranks: runtime.Ranks) -> Optional[list[str]]:
    """Every example's answer in order on rank 0 (None on the others). `answer(batch)` runs one generate()."""
    per_rank = math.ceil(len(examples) / ranks.world_size)
    mine = [min(i, len(examples) - 1) for i in range(ranks.rank * per_rank, (ranks.rank + 1) * per_rank)]
    answers: list[str] = []
    for start in range(0, per_rank, batch_size):
        answers += answer([examples[i] for i in mine[start:start + batch_size]])
    if ranks.world_size > 1 and dist.is_initialized():
        gathered: list = [None] * ranks.world_size
        dist.all_gather_object(gathered, answers)
        answers = [a for share in gathered for a in share]
    return answers[: len(examples)] if ranks.is_main else None


def generation_kwargs(options, zero_stage: int, world_size: int) -> dict:
    """generate()'s options from the recipe's `train.evaluation.generation`."""
    kwargs = {"max_new_tokens": options.max_new_tokens, "min_new_tokens": options.min_new_tokens,
              "num_beams": options.num_beams, "do_sample": options.do_sample}
    if options.do_sample:
        kwargs.update({k: v for k, v in (("temperature", options.temperature), ("top_p", options.top_p))
                       if v is not None})
    if zero_stage == 3 and world_size > 1:
        kwargs["synced_gpus"] = True
    return kwargs


def write_report(examples: Sequence[Example], answers: list[str], out_dir: Path) -> dict[str, float]:
    """predictions.jsonl (image, query, annotation, prediction per row) and generation_metrics.json in
    `out_dir`; the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / PREDICTIONS, "w", encoding="utf-8") as out:
        for example, answer in zip(examples, answers):
            out.write(json.dumps({"image": str(example.image), "query": example.prompt,
                                  "annotation": example.target, "prediction": answer}, ensure_ascii=False) + "\n")
    metrics = generation_metrics(answers, [e.target for e in examples])
    (out_dir / METRICS).write_text(json.dumps(metrics, indent=1))
    return metrics


@contextlib.contextmanager
def evaluating(model) -> Iterator[None]:
    """The module in eval mode without autograd, back in its former mode after (generation inside training)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
