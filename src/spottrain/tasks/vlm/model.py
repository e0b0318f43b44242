"""The model the task adapts: an image-text-to-text model and its processor (from_pretrained, or a tiny one of
a family written once per node), LoRA adapters from peft on its language model, and the adapter's weights as
what checkpoints keep and exports publish.

LoRA goes on the language model only by default: the vision tower and projector stay as pretrained (the seed's
practice; their projections have other names in every family, so the default names the language model's).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spottrain.model_setup import ModelSetup
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.vlm import TINY

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
# peft matches a string target_modules as a full regex over module names: the attention and MLP projections of
# the language model (Llama, Qwen2, Mistral, Gemma, OPT names), never the vision tower's or the Q-Former's.
LANGUAGE_MODEL_PROJECTIONS = (r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|out_proj|gate_proj|up_proj|"
                              r"down_proj|fc1|fc2)")


def model_directory(model_id: str, local_dir: Path, seed: int) -> str:
    """Where from_pretrained reads the model and processor: the id itself, or the tiny family's directory,
    written by the first process that needs it (every rank may ask at once)."""
    if not model_id.startswith(TINY):
        return model_id
    from spottrain.tasks.vlm.tiny import write_tiny_model

    family = model_id[len(TINY):]
    return str(write_tiny_model(family, local_dir / "tiny-models" / f"{family}-{seed}", seed=seed))


def load_processor(directory: str, family: str, options):
    """The model's processor (without torchvision, see `processors`); Qwen-VL's with a fixed number of image
    tokens per image (`min_pixels = max_pixels`, the seed's 224·224), whatever the image's size."""
    from spottrain.tasks.vlm.processors import load_processor as load

    pixels = ({"min_pixels": options.min_pixels, "max_pixels": options.max_pixels}
              if family in QWEN_FAMILIES and options.min_pixels else {})
    try:
        return load(directory, **pixels)
    except OSError as exc:
        raise ConfigurationError(f"train.model.id: cannot load a processor from {directory}: "
                                 f"{str(exc).splitlines()[0]}") from None


def model_family(option: str, directory: str) -> str:
    """The family that chooses prompt handling: train.model.type, or the model config's model_type."""
    from transformers import AutoConfig

    from spottrain.tasks.vlm.prompts import resolve_family

    try:
        config_type = AutoConfig.from_pretrained(directory).model_type
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"train.model.id: no model config at {directory}: "
                                 f"{str(exc).splitlines()[0]}") from None
    return resolve_family(option, config_type)


def load_base_model(directory: str, setup: ModelSetup) -> nn.Module:
    """The pretrained model in the setup's dtype, on its GPU when there is one. Called inside
    `setup.building(seed)`, so weights a checkpoint lacks (a new head) are the same on every rank."""
    from transformers import AutoModelForImageTextToText

    on_gpu = {"device_map": str(setup.device)} if setup.device.type == "cuda" else {}
    try:
        return AutoModelForImageTextToText.from_pretrained(directory, dtype=setup.dtype,
                                                           attn_implementation=setup.attention, **on_gpu)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"train.model.id: cannot load an image-text-to-text model from {directory}: "
                                 f"{str(exc).splitlines()[0]}") from None


def with_lora(model: nn.Module, lora, seed: int, gradient_checkpointing: bool) -> nn.Module:
    """The base model frozen, LoRA adapters on `lora.target_modules` (default: the language model's
    projections), initialised from `seed` so every rank starts from the same adapters."""
    from peft import LoraConfig, get_peft_model

    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # a frozen embedding's output must carry grad for the recompute
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules or LANGUAGE_MODEL_PROJECTIONS, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:  # no module matched
            raise ConfigurationError(f"train.lora.target_modules: {str(exc).splitlines()[0]}") from None


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


class AdapterWeights(nn.Module):
    """The adapter of a peft model as a module of its own: what every checkpoint keeps beside DeepSpeed's files
    (`lora_adapter.safetensors`, megabytes instead of the frozen base's gigabytes) and what `launch eval` loads.
    Its parameters are the adapter's (so ZeRO-3 gathers only those), its state dict peft's adapter state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._model = [model]  # held outside the module tree: the base is not part of this module

    def parameters(self, recurse: bool = True):
        return (p for p in self._model[0].parameters() if p.requires_grad)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self._model[0])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self._model[0], state_dict)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if strict and unexpected:
            raise ConfigurationError(f"the stored adapter does not fit this model's LoRA settings: unexpected "
                                     f"{', '.join(unexpected[:3])}")
        return result


def save_adapter(model: nn.Module, state: dict[str, torch.Tensor], processor, out_dir: Path) -> None:
    """`out_dir` loadable with `PeftModel.from_pretrained(base, out_dir)` (adapter_config.json,
    adapter_model.safetensors), with the processor beside it."""
    model.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True)
    processor.save_pretrained(str(out_dir))


def save_merged(base_directory: str, adapter_dir: Path, setup_dtype: torch.dtype, out_dir: Path,
                processor) -> None:
    """The base with the adapter merged in, as a plain from_pretrained directory (built anew on the CPU from the
    saved adapter, so the live model is left as it is and the saved adapter is proven to load)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_directory, dtype=setup_dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))

