"""The vlm_lora task: LoRA on an image-text-to-text model from CSV rows, the loss on the response tokens only;
validation loss at `train.eval`; after training, answers to the test rows by generation, scored (EM, BLEU-4,
METEOR, ROUGE-L) and kept with the run beside the adapter.

The family (`train.model.type`, or the model config's model_type) chooses the prompt handling (`prompts.py`);
everything else is the same for every family: the model and processor come through transformers' Auto
classes, the adapters through peft.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from spottrain import runtime
from spottrain.engine import consolidated_state_dict
from spottrain.model_setup import ModelSetup
from spottrain.run_files import RunFiles
from spottrain.tasks import LEARNING_RATE_METRIC, NO_RUN_TAGS
from spottrain.tasks.vlm import prompts
from spottrain.tasks.vlm.data import Example, read_examples
from spottrain.tasks.vlm.generated import ensure_generated
from spottrain.tasks.vlm.generation import (METRICS, PREDICTIONS, evaluating, generate_answers, generation_kwargs,
                                            write_report)
from spottrain.tasks.vlm.model import (AdapterWeights, load_base_model, load_processor, model_directory,
                                       model_family, save_adapter, save_merged, trainable_parameters, with_lora)
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.vlm import GENERATED

log = logging.getLogger(__name__)
ADAPTER = "lora_adapter"  # the export's adapter directory, and the module kept beside every checkpoint
MERGED = "merged"


@dataclass
class VlmBatch:
    inputs: dict[str, torch.Tensor]  # the processor's tensors and `labels`

    def to(self, device, non_blocking: bool = False) -> "VlmBatch":
        return VlmBatch({k: v.to(device, non_blocking=non_blocking) for k, v in self.inputs.items()})

    def pin_memory(self) -> "VlmBatch":
        return VlmBatch({k: v.pin_memory() for k, v in self.inputs.items()})


class VlmLoraTask:
    learning_rate_metric = LEARNING_RATE_METRIC
    run_tags = NO_RUN_TAGS  # until build_model knows the parameter counts
    mlflow_artifacts = (ADAPTER, PREDICTIONS, METRICS)  # what after_training and export write, kept in MLflow too

    def __init__(self, train, ranks, files: Optional[RunFiles]):
        self.train, self.ranks = train, ranks
        self.setup = ModelSetup.of(train)
        data = train.data
        generated = ensure_generated(Path(data.generated_dir), seed=0) if data.train_csv == GENERATED else {}
        training_columns = (data.image_column, data.instruction_column, data.response_column)
        self.train_set = read_examples(generated.get("train") or Path(data.train_csv), "train.data.train_csv",
                                       training_columns)
        val = Path(data.val_csv) if data.val_csv else generated.get("val")
        self.val_set = read_examples(val, "train.data.val_csv", training_columns) if val else []
        test = Path(data.test_csv) if data.test_csv else generated.get("test")
        self.test_set = (read_examples(test, "train.data.test_csv",
                                       (data.image_column, data.query_column, data.annotation_column))
                         if test else [])
        self.directory = model_directory(train.model.id, Path(train.checkpoint.local_dir), train.seed)
        self.family = model_family(train.model.type, self.directory)
        self.processor = load_processor(self.directory, self.family, train.model)

    # --- training ----------------------------------------------------------------------------------------

    def build_model(self):
        model = self.inference_model(self.setup.activation_checkpointing)
        trainable, total = trainable_parameters(model)
        log.info("LoRA: %d trainable parameters of %d (%.3f%%)", trainable, total, 100 * trainable / total)
        self.run_tags = {"trainable_parameters": str(trainable), "total_parameters": str(total),
                         "vlm_family": self.family}
        return model

    def inference_model(self, gradient_checkpointing: bool = False):
        """The base model with freshly initialised adapters (a checkpoint's adapter is then loaded into it)."""
        with self.setup.building(self.train.seed):
            base = load_base_model(self.directory, self.setup)
            return with_lora(base, self.train.lora, self.train.seed, gradient_checkpointing)

    def training_indices(self, epoch: int) -> range:
        return range(len(self.train_set))

    def batch(self, indices) -> VlmBatch:
        return self._batch([self.train_set[i] for i in indices])

    def _batch(self, examples: list[Example]) -> VlmBatch:
        options = self.train.evaluation
        inputs = prompts.training_batch(self.processor, self.family, _images(examples), self._prompts(examples),
                                        [e.target for e in examples], self.train.data.max_length,
                                        options.system_message)
        return VlmBatch(self._in_model_dtype(inputs))

    def loss(self, model, batch: VlmBatch):
        loss = model(**batch.inputs).loss
        return loss, {"train/loss": loss.detach()}

    # --- judging -----------------------------------------------------------------------------------------

    def evaluate(self, model) -> dict[str, float]:
        """val/loss over the validation rows (the response tokens), as many batches on every rank."""
        if not self.val_set:
            return {}
        ranks, per_gpu = self.ranks, self.train.batch.per_gpu
        count = max(ranks.world_size, len(self.val_set) // ranks.world_size * ranks.world_size)
        mine = [i % len(self.val_set) for i in range(ranks.rank, count, ranks.world_size)]
        total, seen = torch.zeros((), device=runtime.device()), 0
        for start in range(0, len(mine), per_gpu):
            indices = mine[start:start + per_gpu]
            batch = self._batch([self.val_set[i] for i in indices]).to(runtime.device())
            total += model(**batch.inputs).loss.float() * len(indices)
            seen += len(indices)
        return runtime.mean_across_ranks({"val/loss": total / max(1, seen)})

    def after_training(self, model, out_dir: Path) -> dict[str, float]:
        """Generation on the test rows (train.evaluation), predictions.jsonl and generation_metrics.json in
        `out_dir`; the metrics as test/* (rank 0; empty elsewhere and when evaluation is off)."""
        if not (self.train.evaluation.enabled and self.test_set):
            return {}
        return self.judge(model, out_dir)

    def test_metrics(self, model) -> dict[str, float]:
        """`launch eval RUN`: the same evaluation on one process, for any checkpoint of the run."""
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            return self.judge(model, Path(scratch))

    def adapter_model(self, adapter: str):
        """`launch eval --lora-path`: the base model with an adapter trained anywhere (its own LoRA settings)."""
        from peft import PeftModel

        with self.setup.building(self.train.seed):
            base = load_base_model(self.directory, self.setup)
        try:
            return PeftModel.from_pretrained(base, adapter).to(runtime.device()).eval()
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--lora-path: no adapter peft loads at {adapter}: "
                                     f"{str(exc).splitlines()[0]}") from None

    def judge(self, model, out_dir: Path) -> dict[str, float]:
        """Answers to the test rows by generation, scored; predictions.jsonl and generation_metrics.json in
        `out_dir` (on rank 0, which returns the metrics as test/*)."""
        options = self.train.evaluation
        kwargs = generation_kwargs(options.generation, self.train.deepspeed.zero_stage, self.ranks.world_size)

        def answer(examples: list[Example]) -> list[str]:
            inputs = prompts.generation_batch(self.processor, self.family, _images(examples),
                                              self._prompts(examples), options.system_message)
            inputs = {k: v.to(runtime.device()) for k, v in self._in_model_dtype(inputs).items()}
            output = model.generate(**inputs, **kwargs)
            return prompts.decode_new_tokens(self.processor, output, inputs["input_ids"].shape[1])

        with evaluating(model):
            answers = generate_answers(model, self.test_set, answer, options.batch_size, self.ranks)
        if answers is None:
            return {}
        return {f"test/{k}": v for k, v in write_report(self.test_set, answers, out_dir).items()}

    def _prompts(self, examples: list[Example]) -> list[str]:
        template = self.train.evaluation.prompt_template
        return [template.replace("{query}", e.prompt) for e in examples]

    def _in_model_dtype(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pixel tensors in the model's dtype (bf16 on a GPU): DeepSpeed casts the weights, not the inputs."""
        return {k: v.to(self.setup.dtype) if v.is_floating_point() else v for k, v in inputs.items()}

    # --- weights -----------------------------------------------------------------------------------------

    def checkpoint_modules(self, model) -> dict[str, torch.nn.Module]:
        """The adapter beside every checkpoint (megabytes): what `launch eval` loads, for any checkpoint."""
        return {ADAPTER: AdapterWeights(model)}

    def export(self, model, out_dir: Path) -> None:
        """lora_adapter/ (PeftModel.from_pretrained), and merged/ when train.model.merge_full_model."""
        state = consolidated_state_dict(AdapterWeights(model), self.train.deepspeed.zero_stage, self.ranks.is_main)
        if not self.ranks.is_main:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(model, state, self.processor, out_dir / ADAPTER)
        if self.train.model.merge_full_model:
            save_merged(self.directory, out_dir / ADAPTER, self.setup.dtype, out_dir / MERGED, self.processor)


def _images(examples: list[Example]) -> list:
    from PIL import Image

    images = []
    for example in examples:
        with Image.open(example.image) as image:
            images.append(image.convert("RGB"))
    return images
