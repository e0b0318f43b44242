"""Prompts, labels and padding for each family: what the model sees in training and in generation.

A prompt is one user turn of an image and a text (evaluation.prompt_template already applied), rendered with the
processor's own chat template where the family has one (LLaVA's "USER: <image>\n… ASSISTANT:", Qwen-VL's ChatML
with its vision tokens, or any other model whose processor carries one) and as BLIP-2's "Question: … Answer:"
otherwise. The processor expands the image tokens, so one code path serves the tiny models and published ones.

In training the response follows the prompt exactly as the template renders an assistant turn after it, up to
its end-of-turn token, and ends with the tokenizer's EOS where the template does not (LLaVA's leaves it out): the
model learns to stop where generation stops. The loss sees only those tokens. The prompt and the response are
tokenized apart and joined, so the prompt's tokens are the very ones generation is given.
"""

from __future__ import annotations

from typing import Optional

import torch

from spottrain_contract.errors import ConfigurationError

IGNORE = -100  # the label cross-entropy skips
CONFIG_FAMILIES = {"llava": "llava", "llava_next": "llava_next", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl",
                   "blip-2": "blip2"}  # a model config's model_type -> the family of train.model.type
CHAT_FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")
PLAIN_PROMPT = "Question: {query} Answer:"  # BLIP-2's, and any model's whose processor has no chat template


def resolve_family(model_type: str, config_model_type: str) -> str:
    """train.model.type, `auto` read from the model config's model_type (a type of no listed family stays as it
    is: its processor's chat template, if any, decides its prompts)."""
    if model_type != "auto":
        return model_type
    return CONFIG_FAMILIES.get(config_model_type, config_model_type)


def training_batch(processor, family: str, images: list, prompts: list[str], responses: list[str],
                   max_length: int, system_message: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Model inputs of prompt + response, right-padded, with `labels` IGNORE except on the response and its end
    token; a response that does not fit in max_length tokens is cut, never the prompt and its image tokens."""
    prompt_texts = [_prompt_text(processor, family, prompt, system_message) for prompt in prompts]
    answers = [_answer_text(processor, family, prompt, text, response, system_message)
               for prompt, text, response in zip(prompts, prompt_texts, responses)]
    inputs, rows = _encode(processor, images, prompt_texts)
    longest = max(len(row["input_ids"]) for row in rows)
    if longest >= max_length:
        raise ConfigurationError(f"train.data.max_length: expected more than the {longest} tokens of a prompt with its "
                         f"image tokens, got {max_length}")
    answer_ids = processor.tokenizer(answers, add_special_tokens=False)["input_ids"]
    for row, ids in zip(rows, answer_ids):
        ids = torch.tensor(ids[:max_length - len(row["input_ids"])], dtype=row["input_ids"].dtype)
        tail = {key: torch.full_like(ids, int(key == "attention_mask")) for key in row}  # attended to, text
        tail["input_ids"] = ids
        row["labels"] = torch.cat([torch.full_like(row["input_ids"], IGNORE), ids])
        for key, values in tail.items():
            row[key] = torch.cat([row[key], values])
    return {**inputs, **_pad(rows, processor.tokenizer.pad_token_id, left=False)}


def generation_batch(processor, family: str, images: list, prompts: list[str],
                     system_message: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Model inputs of the prompts alone, the assistant turn opened, left-padded for generate()."""
    prompt_texts = [_prompt_text(processor, family, prompt, system_message) for prompt in prompts]
    inputs, rows = _encode(processor, images, prompt_texts)
    return {**inputs, **_pad(rows, processor.tokenizer.pad_token_id, left=True)}


def decode_new_tokens(processor, output_ids: torch.Tensor, prompt_length: int) -> list[str]:
    """The generated text of each row of generate()'s output (prompt_length: the width of its input_ids), special
    tokens left out."""
    return [text.strip() for text in processor.batch_decode(output_ids[:, prompt_length:], skip_special_tokens=True)]


def _chat(processor, family: str) -> bool:
    """Whether prompts are the processor's chat template (else PLAIN_PROMPT): always for the chat families, never
    for BLIP-2, for a type of no listed family where its processor has one."""
    if family == "blip2":
        return False
    if family in CHAT_FAMILIES and not processor.chat_template:
        raise ValueError(f"train.model.id: expected a processor with a chat template for the {family} family, "
                         f"got none")
    return bool(processor.chat_template)


def _messages(prompt: str, system_message: Optional[str]) -> list[dict]:
    system = [{"role": "system", "content": [{"type": "text", "text": system_message}]}] if system_message else []
    return [*system, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def _prompt_text(processor, family: str, prompt: str, system_message: Optional[str]) -> str:
    if not _chat(processor, family):
        return PLAIN_PROMPT.format(query=prompt)
    return processor.apply_chat_template(_messages(prompt, system_message), add_generation_prompt=True,
                                         tokenize=False)


def _answer_text(processor, family: str, prompt: str, prompt_text: str, response: str,
                 system_message: Optional[str]) -> str:
    """What follows the prompt: the template's assistant turn without trailing whitespace, ending with EOS."""
    if _chat(processor, family):
        messages = [*_messages(prompt, system_message),
                    {"role": "assistant", "content": [{"type": "text", "text": response}]}]
        full = processor.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt_text):
            raise ValueError(f"train.model.type: expected a chat template ({family}) whose assistant turn follows "
                             f"the generation prompt, got {full!r} after {prompt_text!r}")
        answer = full[len(prompt_text):].rstrip()
    else:
        answer = f" {response}"
    eos = processor.tokenizer.eos_token
    return answer if not eos or answer.endswith(eos) else answer + eos


def _encode(processor, images: list, prompt_texts: list[str]) -> tuple[dict, list[dict]]:
    """The processor's encoding of the prompts: its image inputs (pixel_values, image_grid_thw, …) as a batch, and
    each prompt's per-token tensors (input_ids, attention_mask, mm_token_type_ids, …) unpadded."""
    encoded = processor(images=images, text=prompt_texts, padding=True, padding_side="right", return_tensors="pt")
    ids = encoded["input_ids"]
    per_token = [key for key, value in encoded.items()
                 if torch.is_tensor(value) and value.shape == ids.shape and not value.is_floating_point()]
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    rows = [{key: encoded[key][i, :n] for key in per_token} for i, n in enumerate(lengths)]
    return {key: value for key, value in encoded.items() if key not in per_token}, rows


def _pad(rows: list[dict], pad_token_id: int, left: bool) -> dict[str, torch.Tensor]:
    """The rows' per-token tensors stacked, padded on one side: input_ids with the pad token, labels with IGNORE,
    the rest (attention_mask, type ids) with 0."""
    width = max(len(row["input_ids"]) for row in rows)
    fill = {"input_ids": pad_token_id, "labels": IGNORE}
    batch = {}
    for key in rows[0]:
        padded = torch.full((len(rows), width), fill.get(key, 0), dtype=rows[0][key].dtype)
        for i, row in enumerate(rows):
            n = len(row[key])
            padded[i, slice(width - n, width) if left else slice(0, n)] = row[key]
        batch[key] = padded
    return batch
