"""Code-solution records, Alpaca prompts, tokenisation with prompt masking, and the generated local set.

A record is `{instruction, input, output, task_id, is_correct, metadata}`; the prompt is masked and the
solution (plus EOS) is what the model is trained to produce.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from spottrain_contract.errors import ConfigurationError

GENERATED = "generated"
PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
REQUIRED_FIELDS = ("instruction", "output", "is_correct")


def prompt_for(record: dict) -> str:
    template = PROMPT_WITH_INPUT if record.get("input") else PROMPT_NO_INPUT
    return template.format(instruction=record["instruction"], input=record.get("input", ""))


def load_records(source: str, *, split: str, seed: int) -> list[dict]:
    if source == GENERATED:
        return generated_records(split=split, seed=seed)
    path = Path(source)
    if not path.is_file():
        raise ConfigurationError(f"train.data.{split}: no such file {source}")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{source}:{number}: not JSON ({exc.msg})") from None
            missing = [f for f in REQUIRED_FIELDS if f not in record]
            if missing:
                raise ConfigurationError(f"{source}:{number}: missing field {missing[0]!r}")
            records.append(record)
    return records


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    response_mask: list[int]  # 1 where the token is part of the response (a training target)
    is_correct: bool
    task_id: str


def encode(record: dict, tokenizer, max_length: int) -> Example:
    prompt_ids = tokenizer(prompt_for(record), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(record["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + prompt_ids
    mask = [0] * len(ids) + [1] * len(response_ids)
    ids = (ids + response_ids)[:max_length]
    return Example(ids, mask[:max_length], bool(record["is_correct"]), str(record.get("task_id", "")))


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, S], right-padded
    response_mask: torch.Tensor  # [B, S] float, 0 on prompt and padding
    is_correct: torch.Tensor  # [B] float

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking)
                       for t in (self.input_ids, self.response_mask, self.is_correct)))

    def pin_memory(self) -> "Batch":
        return Batch(self.input_ids.pin_memory(), self.response_mask.pin_memory(), self.is_correct.pin_memory())


def collate(examples: list[Example], pad_id: int) -> Batch:
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.float32)
    for row, example in enumerate(examples):
        ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        mask[row, : len(example.response_mask)] = torch.tensor(example.response_mask, dtype=torch.float32)
    correct = torch.tensor([float(e.is_correct) for e in examples])
    return Batch(ids, mask, correct)


class EncodedDataset:
    """Records tokenised on first use, so a large JSONL costs no start-up time beyond reading it."""

    def __init__(self, records: list[dict], tokenizer, max_length: int):
        self.records, self.tokenizer, self.max_length = records, tokenizer, max_length
        self._cache: dict[int, Example] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Example:
        if index not in self._cache:
            self._cache[index] = encode(self.records[index], self.tokenizer, self.max_length)
        return self._cache[index]

    def batch(self, indices: list[int]) -> Batch:
        return collate([self[i] for i in indices], self.tokenizer.pad_token_id)


def generated_records(*, split: str, seed: int, tasks: Optional[int] = None) -> list[dict]:
    """Small arithmetic-function problems, each with a correct and an incorrect solution. Deterministic."""
    rng = random.Random(f"{split}-{seed}")
    tasks = tasks or (160 if split == "train" else 24)
    ops = [("sum", "+"), ("difference", "-"), ("product", "*"), ("maximum", "max"), ("minimum", "min")]
    records = []
    for number in range(tasks):
        name = rng.choice(["f", "g", "combine", "solve", "apply", "calc"])
        a, b = rng.sample(["x", "y", "a", "b", "m", "n"], 2)
        what, op = rng.choice(ops)
        wrong = rng.choice([o for _, o in ops if o != op])
        body = (lambda o: f"{o}({a}, {b})" if o in ("max", "min") else f"{a} {o} {b}")
        task_id = f"{split}/{number}"
        instruction = f"Write a Python function `{name}({a}, {b})` that returns the {what} of {a} and {b}."
        for correct, o in ((True, op), (False, wrong)):
            records.append({
                "instruction": instruction, "input": "", "task_id": task_id, "is_correct": correct,
                "output": f"def {name}({a}, {b}):\n    return {body(o)}\n", "metadata": {"source": GENERATED},
            })
    return records
