"""Tiny random models of each family (`train.model.id: tiny:<family>`), written as from_pretrained directories.

Local runs and tests need no download: each family's model is built from its config in code (under 200
thousand parameters, 32-px images) with a processor like the published one (its processor class, image token
handling and chat template) over this project's character-level tokenizer (wmtp.micro) plus the family's special
tokens, so any text round-trips and exact match is reachable. The directory loads with the Auto classes
(AutoModelForImageTextToText covers all three families; the processor through processors.load_processor) and so
takes the same code path as a published model. The same weights for the same seed; written once, atomically
(a finished directory appears by rename), so every rank may call it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from spottrain_contract.vlm import TINY_FAMILIES

IMAGE_SIZE = 32  # LLaVA's and BLIP-2's input images (pixels a side)
PATCH = 8  # their vision patch: 16 patches
QWEN_PIXELS = 56 * 56  # Qwen2-VL's fixed image area: 4×4 patches of 14 px, merged 2×2 into 4 image tokens
BLIP2_QUERIES = 4  # BLIP-2's Q-Former queries: its image tokens
# The weights' spread, 10× transformers' default: LoRA leaves the output head frozen, and from 0.02 a 64-wide
# model's logits span about ±1, so the loss of a LoRA run barely falls; from 0.2 the tiny models learn the set.
INIT = 0.2

# llava-hf/llava-1.5-7b-hf's chat template: "USER: <image>\n{text} ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Qwen/Qwen2-VL-7B-Instruct's chat template: ChatML with the vision tokens.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] "
    "== 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value "
    "+ 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = "
    "video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|>"
    "<|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|image_pad|>", "<|video_pad|>")


def write_tiny_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """The tiny model and processor of `family` saved in `out_dir` (written unless already there); returns it."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"train.model.id: expected a tiny family of {', '.join(TINY_FAMILIES)}, got {family!r}")
    if (out_dir / "config.json").is_file():
        return out_dir
    partial = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.partial")
    partial.mkdir(parents=True)
    try:
        model, processor = _BUILDERS[family](seed)
        _save_model(model, partial)
        processor.save_pretrained(partial)
        os.rename(partial, out_dir)
    except OSError:
        if not (out_dir / "config.json").is_file():  # not a rename lost to another writer of the same model
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def _save_model(model, directory: Path) -> None:
    """Config, generation config and weights as from_pretrained reads them. Not `save_pretrained`: in a process
    group transformers writes weights on global rank 0 only, and every node (every rank racing here) needs the
    files on its own disk."""
    from safetensors.torch import save_model

    model.config.save_pretrained(directory)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(directory)
    save_model(model, str(directory / "model.safetensors"))  # tied weights stored once, as from_pretrained expects


def _tokenizer(special_tokens: tuple[str, ...], eos: str, pad: str):
    """The micro model's character-level tokenizer with the family's special tokens (matched whole)."""
    from spottrain.tasks.wmtp.micro import micro_tokenizer

    tokenizer = micro_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    tokenizer.eos_token, tokenizer.pad_token = eos, pad
    return tokenizer


def _text_ids(tokenizer) -> dict:
    return {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def _seeded(model_class, config, tokenizer, seed: int):
    """The model with weights drawn from `seed` (the caller's random state untouched), generating until the
    tokenizer's EOS."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config.update(**{k: v for k, v in _text_ids(tokenizer).items() if k != "vocab_size"})
    return model


def _llava(seed: int):
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = _tokenizer(("<image>",), eos="</s>", pad="<pad>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
                                       projection_dim=32),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=4, max_position_embeddings=1024, initializer_range=INIT,
                                **_text_ids(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # As llava-1.5-hf: the CLS token counted (+1), then dropped by the "default" feature selection.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    return _seeded(LlavaForConditionalGeneration, config, tokenizer, seed), processor


def _qwen2_vl(seed: int):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    from spottrain.tasks.vlm.processors import image_only

    tokenizer = _tokenizer(QWEN2_VL_TOKENS, eos="<|im_end|>", pad="<|endoftext|>")
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2VLConfig(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "max_position_embeddings": 1024, "initializer_range": INIT,
                     # M-RoPE: a head of 16 has 8 rotary frequencies, split over time, height and width
                     "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                     **_text_ids(tokenizer)},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        **ids,
    )
    # size, not min_pixels/max_pixels: the latter write into the class's shared default size dict (transformers 5)
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": QWEN_PIXELS, "longest_edge": QWEN_PIXELS})
    processor = image_only(Qwen2VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                             chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return _seeded(Qwen2VLForConditionalGeneration, config, tokenizer, seed), processor


def _blip2(seed: int):
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil,
                              OPTConfig)

    tokenizer = _tokenizer(("<image>",), eos="</s>", pad="<pad>")
    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": PATCH},
        qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "encoder_hidden_size": 32, "vocab_size": 2,
                        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        text_config=OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                              word_embed_proj_dim=64, max_position_embeddings=1024, dropout=0.0, init_std=INIT,
                              **_text_ids(tokenizer)),
        initializer_range=INIT, num_query_tokens=BLIP2_QUERIES,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=BLIP2_QUERIES)
    return _seeded(Blip2ForConditionalGeneration, config, tokenizer, seed), processor


_BUILDERS = {"llava": _llava, "qwen2_vl": _qwen2_vl, "blip2": _blip2}
