"""The options of VLM LoRA fine-tuning with evaluation by generation (seed 002): what `vlm_lora` trains.

An image-text-to-text model from transformers (LLaVA, LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, BLIP-2, or another
through the Auto classes) gets LoRA adapters (peft) on its language model and learns to answer a CSV of
(image, instruction, response) rows, the loss on the response tokens only. After training (and through
`launch eval`) it answers a test CSV by generation, scored by exact match, BLEU-4, METEOR and ROUGE-L.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from spottrain_contract.schema import FieldProblem, PositiveInt, Strict, above, between

MODEL_TYPES = ("auto", "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "blip2")
TINY = "tiny:"  # train.model.id `tiny:<family>`: a small model of that family built from a config in code
TINY_FAMILIES = ("llava", "qwen2_vl", "blip2")
GENERATED = "generated"  # train.data.train_csv: the small generated image-text set (written to generated_dir)
QWEN_FIXED_PIXELS = 224 * 224  # the seed's fixed Qwen-VL image size (min_pixels = max_pixels)


class VlmModel(Strict):
    """The model to adapt; its processor comes from the same id or path."""

    id: str = Field(description="A Hugging Face model id or local path (from_pretrained), or 'tiny:llava', "
                                "'tiny:qwen2_vl', 'tiny:blip2' for a small model built in code (CPU runs, tests).")
    type: Literal[MODEL_TYPES] = Field(
        "auto", description="The family, which chooses prompt and processor handling (the seed's model_type); "
                            "auto: the model config's model_type.")
    min_pixels: Optional[PositiveInt] = Field(
        QWEN_FIXED_PIXELS, description="Qwen-VL: the image processor's min_pixels (the seed fixes 224·224 so "
                                       "every image is the same number of tokens).")
    max_pixels: Optional[PositiveInt] = Field(QWEN_FIXED_PIXELS, description="Qwen-VL: the image processor's "
                                                                             "max_pixels.")
    merge_full_model: bool = Field(False, description="Also export the base model with the adapter merged "
                                                      "(`final/`), besides `lora_adapter/`.")

    @model_validator(mode="after")
    def _tiny_family(self):
        if self.id.startswith(TINY) and self.id[len(TINY):] not in TINY_FAMILIES:
            raise FieldProblem("id", f"expected {', '.join(TINY + f for f in TINY_FAMILIES)} for a tiny model, "
                                     f"got {self.id!r}")
        return self


class Lora(Strict):
    """peft's LoraConfig on the language model; the vision tower and projector stay frozen."""

    r: PositiveInt = Field(16, description="Rank of the adapters.")
    alpha: Annotated[float, above(0)] = Field(32, description="Scaling numerator (lora_alpha; the update is "
                                                              "scaled by alpha / r).")
    dropout: Annotated[float, between(0, 0.9)] = Field(0.05, description="Dropout on the adapters' input.")
    target_modules: Optional[list[str]] = Field(
        None, description="Module names to adapt; null: the attention and MLP projections of the language model "
                          "(q, k, v, o, gate, up, down), the vision tower excluded.")


class VlmData(Strict):
    """CSV files; image paths are relative to the CSV's directory or absolute."""

    train_csv: str = Field(description="Training CSV (image, instruction, response columns), or 'generated'.")
    val_csv: Optional[str] = Field(None, description="Validation CSV (training columns): val/loss at train.eval.")
    test_csv: Optional[str] = Field(None, description="Evaluation CSV (image, query, annotation columns), "
                                                      "answered by generation after training.")
    generated_dir: str = Field("runs/vlm-data", description="Where the generated set is written, if used.")
    image_column: str = Field("url", description="Column of the image path (every CSV).")
    instruction_column: str = Field("instruction", description="Column of the prompt (training CSVs).")
    response_column: str = Field("response", description="Column of the answer trained on (training CSVs).")
    query_column: str = Field("query", description="Column of the question asked (test CSV).")
    annotation_column: str = Field("annotation", description="Column of the expected answer the generation is "
                                                             "scored against (test CSV).")
    max_length: PositiveInt = Field(512, description="Prompt and response tokens kept per example (image "
                                                     "tokens included); the response is cut first.")


class Generation(Strict):
    """transformers' generate() options, as the seed names them."""

    max_new_tokens: PositiveInt = Field(128, description="Most tokens generated per answer.")
    min_new_tokens: Annotated[int, between(0, 10**6)] = Field(0, description="Fewest tokens generated per answer.")
    num_beams: PositiveInt = Field(1, description="Beams of beam search (1: none).")
    do_sample: bool = Field(False, description="Sample instead of greedy or beam search.")
    temperature: Optional[Annotated[float, above(0)]] = Field(
        None, description="Sampling temperature (with do_sample; unset: the model's default).")
    top_p: Optional[Annotated[float, between(0, 1)]] = Field(
        None, description="Nucleus sampling: keep the smallest set of tokens of this probability (with do_sample).")

    @model_validator(mode="after")
    def _sampling_options(self):
        for name in ("temperature", "top_p"):
            if getattr(self, name) is not None and not self.do_sample:
                raise FieldProblem(name, "expected do_sample: true with this set (greedy or beam search ignores it)")
        if self.min_new_tokens > self.max_new_tokens:
            raise FieldProblem("min_new_tokens", f"expected ≤ max_new_tokens ({self.max_new_tokens}), got "
                                                 f"{self.min_new_tokens}")
        return self


class VlmEvaluation(Strict):
    """Evaluation by generation on data.test_csv after training (and `launch eval`)."""

    enabled: bool = Field(True, description="Generate and score after training (needs data.test_csv).")
    batch_size: PositiveInt = Field(4, description="Prompts per generate() call on each rank.")
    prompt_template: str = Field("{query}", description="The user turn; {query} is the CSV's query.")
    system_message: Optional[str] = Field(None, description="A system turn before it, where the family's "
                                                            "template has one.")
    generation: Generation = Field(default_factory=Generation, description="How answers are generated.")

    @model_validator(mode="after")
    def _template_has_query(self):
        if "{query}" not in self.prompt_template:
            raise FieldProblem("prompt_template", f"expected a template containing {{query}}, got "
                                                  f"{self.prompt_template!r}")
        return self


class VlmLoraStage(Strict):
    """LoRA fine-tuning of a vision-language model, evaluated by generation (seed 002)."""

    model: VlmModel = Field(description="The vision-language model adapted.")
    lora: Lora = Field(default_factory=Lora, description="The LoRA adapters trained.")
    data: VlmData = Field(description="The training, validation and test CSVs and their columns.")
    evaluation: VlmEvaluation = Field(default_factory=VlmEvaluation,
                                      description="Evaluation by generation after training.")

    @model_validator(mode="after")
    def _evaluation_has_data(self):
        if self.evaluation.enabled and self.data.test_csv is None and self.data.train_csv != GENERATED:
            raise FieldProblem("evaluation", "expected data.test_csv when evaluation.enabled is true (or set "
                                             "evaluation.enabled: false)")
        return self
