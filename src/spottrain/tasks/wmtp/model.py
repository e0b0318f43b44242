"""Multi-token prediction on a Hugging Face causal LM (PIPELINES.md, "The model").

Trunk = all decoder layers but the last; head 0 = the last layer; heads 1..n-1 = extra layers of the same
shape. Every head reads the trunk output, then the shared final norm and output projection. The base model
object is kept whole (its last layer is head 0), so the final export is a plain `from_pretrained` checkpoint
plus the extra heads in one file beside it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spottrain.linear_cross_entropy import LinearWithCrossEntropy
from spottrain.model_setup import CPU_FP32, ModelSetup
from spottrain.tasks.wmtp.micro import MICRO, micro_config, micro_tokenizer
from spottrain_contract.errors import ConfigurationError

EXTRA_HEADS_FILE = "mtp_heads.safetensors"


@dataclass
class MTPOutput:
    """What the heads computed, before the output projection: the loss asks for the cross-entropy of its targets
    (computed a chunk at a time, see spottrain.linear_cross_entropy), never for the whole `[B, S, n, V]` logits."""

    hidden: torch.Tensor  # [B, S, n_future, H], each head's output after the final norm
    trunk: torch.Tensor  # [B, S, H], the shared trunk output every head reads
    projection: LinearWithCrossEntropy

    def cross_entropy(self, targets: torch.Tensor) -> torch.Tensor:
        """[B, S, n] CE of `targets` [B, S, n] (head k's target at position t), fp32."""
        return self.projection(self.hidden, targets)

    @property
    def logits(self) -> torch.Tensor:
        """[B, S, n, V]: for inspection and generation, not for the loss."""
        return self.projection(self.hidden)


class MultiTokenLM(nn.Module):
    def __init__(self, causal_lm: nn.Module, n_future: int):
        super().__init__()
        self.lm = causal_lm
        self.lm.lm_head = LinearWithCrossEntropy.replacing(causal_lm.lm_head)
        last = causal_lm.model.layers[-1]
        self.extra_heads = nn.ModuleList(copy.deepcopy(last) for _ in range(n_future - 1))
        self.n_future = n_future

    @property
    def hidden_size(self) -> int:
        return self.lm.config.hidden_size

    def heads(self):
        return [self.lm.model.layers[-1], *self.extra_heads]

    def trunk(self, input_ids: torch.Tensor):
        """The shared trunk output [B, S, H], with the positions and rotary embeddings the heads need."""
        base = self.lm.model
        # Right padding only: causal attention already keeps real tokens from seeing the pads after them.
        hidden = base.embed_tokens(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        rotary = base.rotary_emb(hidden, position_ids=positions)
        for layer in base.layers[:-1]:
            hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
        return hidden, positions, rotary

    def forward(self, input_ids: torch.Tensor) -> MTPOutput:
        hidden, positions, rotary = self.trunk(input_ids)
        base = self.lm.model
        heads = [base.norm(head(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary))
                 for head in self.heads()]
        return MTPOutput(hidden=torch.stack(heads, dim=2), trunk=hidden, projection=self.lm.lm_head)


class ValueHead(nn.Module):
    """V: hidden → hidden/4 → hidden/8 → 1 with GELU, one value per position (PIPELINES.md, stage 2)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden // 4), nn.GELU(), nn.Linear(hidden // 4, hidden // 8),
                                 nn.GELU(), nn.Linear(hidden // 8, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden).squeeze(-1)


def load_tokenizer(path: str):
    if path == MICRO:
        return micro_tokenizer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, vocab_size: int, seed: int, setup: ModelSetup = CPU_FP32,
                   init: str = "pretrained") -> nn.Module:
    """A local Hugging Face model, built on the setup's device in its dtype: its pretrained weights, or weights
    initialised from `seed` (the same on every rank) for the micro model and `init: random` (its config.json)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if path != MICRO and not (Path(path) / "config.json").is_file():
        raise ConfigurationError(f"train.model.path: no Hugging Face model directory (config.json) at {path}")
    if path == MICRO or init == "random":
        config = micro_config(vocab_size) if path == MICRO else AutoConfig.from_pretrained(path)
        with setup.building(seed):
            return AutoModelForCausalLM.from_config(config, attn_implementation=setup.attention, dtype=setup.dtype)
    # On a GPU straight onto it: transformers builds on the meta device and loads each weight where it goes
    # (its device_map needs accelerate, in the `node` extra).
    on_gpu = {"device_map": str(setup.device)} if setup.device.type == "cuda" else {}
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=setup.attention, dtype=setup.dtype,
                                                **on_gpu)


def build_mtp_model(path: str, n_future: int, vocab_size: int, seed: int, setup: ModelSetup = CPU_FP32,
                    init: str = "pretrained") -> MultiTokenLM:
    lm = load_causal_lm(path, vocab_size, seed, setup, init)
    if setup.activation_checkpointing:  # before the extra heads are copied from the last layer: they inherit it
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = MultiTokenLM(lm, n_future)
    heads_file = Path(path) / EXTRA_HEADS_FILE
    if path != MICRO and init == "pretrained" and heads_file.is_file():
        from safetensors.torch import load_file

        model.extra_heads.load_state_dict(load_file(str(heads_file)))
    setup.finish([*lm.model.layers, *model.extra_heads])
    return model


def export_pretrained(model: MultiTokenLM, state_dict: dict, tokenizer, out_dir: Path) -> None:
    """Write `from_pretrained` weights (trunk + head 0) and the extra heads beside them."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    lm_state = {k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")}
    model.lm.save_pretrained(out_dir, state_dict=lm_state, safe_serialization=True)
    heads = {k[len("extra_heads."):]: v.contiguous() for k, v in state_dict.items() if k.startswith("extra_heads.")}
    if heads:
        save_file(heads, str(out_dir / EXTRA_HEADS_FILE), metadata={"n_future_tokens": str(model.n_future)})
    tokenizer.save_pretrained(out_dir)


class ValueModel(nn.Module):
    """A multi-token LM with a value head on its trunk: the critic (LM frozen, only V learns) and the
    verifiable policy (both learn). `with_logits=False` skips the heads when only values are needed."""

    def __init__(self, mtp: MultiTokenLM, value_head: ValueHead):
        super().__init__()
        self.mtp, self.value_head = mtp, value_head

    def forward(self, input_ids: torch.Tensor, with_logits: bool = True):
        if with_logits:
            out = self.mtp(input_ids)
            return out, self.value_head(out.trunk)
        hidden, _, _ = self.mtp.trunk(input_ids)
        return None, self.value_head(hidden)
