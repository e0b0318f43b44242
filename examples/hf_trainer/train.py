"""Hugging Face Trainer, spot-safe: a tiny Llama (built from a LlamaConfig, no download) learning generated
sequences, with evaluation, checkpoints every `save_steps`, and the best checkpoint picked by eval loss.

    torchrun --nproc_per_node=2 examples/hf_trainer/train.py --config config.yaml    (recipes/hf_trainer.yaml)

The spottrain lines: `output_dir` is spottrain's checkpoint directory, `SpottrainCallback()` is in the callbacks,
and train() resumes from `resume_dir()`. Trainer's own checkpoints carry the model, optimizer, scheduler, every
rank's RNG and the step, and it skips the batches already seen, so an interrupted and resumed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from spottrain.integrations import script as spottrain
from spottrain.integrations.transformers import SpottrainCallback, trained_to_the_end


def load_config(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


class Sequences(torch.utils.data.Dataset):
    """Arithmetic sequences modulo the vocabulary (start and stride drawn from `seed`): learnable, no files."""

    def __init__(self, samples: int, length: int, vocab: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        start = torch.randint(vocab, (samples, 1), generator=generator)
        stride = torch.randint(1, 8, (samples, 1), generator=generator)
        self.tokens = (start + stride * torch.arange(length)) % vocab

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


def cpu_ranks_can_resume() -> None:
    """transformers 5.x loads a resumed optimizer onto the rank's device, "cpu:0" for a CPU rank under torchrun,
    which torch.load does not know: read it as "cpu" (CPU only: the local profile)."""
    torch.serialization.register_package(
        5, lambda storage: None, lambda storage, location: storage if location.startswith("cpu:") else None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = load_config(parser.parse_args().config)
    data, seed = config["data"], config["training"]["seed"]
    torch.manual_seed(seed)  # the initial weights
    model = LlamaForCausalLM(LlamaConfig(**config["model"]))
    vocab = config["model"]["vocab_size"]
    train = Sequences(data["train_samples"], data["length"], vocab, seed)
    val = Sequences(data["val_samples"], data["length"], vocab, seed + 1)
    if not torch.cuda.is_available():
        cpu_ranks_can_resume()
    output = spottrain.checkpoint_dir("out")
    args = TrainingArguments(output_dir=str(output), eval_strategy="steps", save_strategy="steps",
                             metric_for_best_model="eval_loss", use_cpu=not torch.cuda.is_available(),
                             **config["training"])  # use_cpu: without it, CPU ranks under torchrun train alone
    resume = spottrain.resume_dir()
    if trained_to_the_end(resume, args.max_steps):  # killed after its last save: only the final weights are left
        Trainer(model=LlamaForCausalLM.from_pretrained(resume), args=args, eval_dataset=val).save_model(
            str(spottrain.export_dir()))
        return
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[SpottrainCallback()])
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.state.global_step >= trainer.state.max_steps:  # not stopped early: the final weights
        trainer.save_model(str(spottrain.export_dir()))  # published as the run's final export


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():  # Trainer leaves torchrun's group open; a Gloo group's worker threads
        torch.distributed.destroy_process_group()  # torn down with the interpreter may abort the rank (SIGABRT)
