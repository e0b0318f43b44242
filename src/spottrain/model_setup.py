"""How a task's model is built for speed on the node: its attention kernel, dtype and device, and the layer
options of `train.performance`. Every task builds through this, so the knobs mean the same in each."""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from spottrain import runtime
from spottrain_contract.errors import ConfigurationError

_FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class ModelSetup:
    attention: str
    dtype: torch.dtype
    device: torch.device
    activation_checkpointing: bool = False
    compile: bool = False

    @classmethod
    def of(cls, train) -> "ModelSetup":
        """From the recipe: on a GPU the model is built there, in the training precision (DeepSpeed would cast
        it to that anyway, and keeps fp32 master weights itself); on the CPU in fp32, as DeepSpeed runs it."""
        performance, device = train.performance, runtime.device()
        package = _FLASH_PACKAGES.get(performance.attention)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigurationError(f"train.performance.attention: {performance.attention} needs the {package} "
                                     f"package on the node (or use sdpa)")
        dtype = _DTYPES[train.deepspeed.precision] if device.type == "cuda" else torch.float32
        return cls(performance.attention, dtype, device, performance.activation_checkpointing,
                   performance.compile)

    @contextlib.contextmanager
    def building(self, seed: int) -> Iterator[None]:
        """Weights created inside are created on this device and initialised from `seed` (the same on every
        rank); the run's own random generators are left as they were."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.device:
            torch.manual_seed(seed)
            yield

    def finish(self, layers: list[nn.Module]) -> None:
        """Compile each decoder layer if asked (after the model is complete: heads copied, weights loaded)."""
        if self.compile:
            for layer in layers:
                layer.compile()


CPU_FP32 = ModelSetup(attention="sdpa", dtype=torch.float32, device=torch.device("cpu"))
