"""Backbone features computed once per image, not once per pair: with a frozen backbone and no augmentation an
image's features never change during a run, and a pair costs two backbone passes otherwise.

Keyed by what they depend on: the image's bytes (sha256) and the preprocessing plus backbone (`signature`). The
ranks share the work (rank r takes every r-th missing image) and exchange the results; local rank 0 keeps them
in the run's local directory, so a restarted attempt on the same machine computes nothing again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from spottrain import runtime
from spottrain.runtime import Ranks


def content_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FeatureCache:
    def __init__(self, directory: Path, signature: str, ranks: Ranks):
        self.path = directory / f"features-{signature}.safetensors"
        self.ranks = ranks

    def features(self, paths: Sequence[Path], compute: Callable[[list[Path]], torch.Tensor],
                 batch: int) -> torch.Tensor:
        """[len(paths), F] float32 on the CPU: cached rows as they are, the others computed `batch` at a time
        (`compute` maps image paths to their features on any device)."""
        keys = [content_key(path) for path in paths]
        known = self._load()
        missing = sorted({key: i for i, key in reversed(list(enumerate(keys))) if key not in known}.values())
        mine = missing[self.ranks.rank::self.ranks.world_size]
        computed = [compute([paths[i] for i in mine[start:start + batch]]).float().cpu()
                    for start in range(0, len(mine), batch)]
        for i, row in zip(mine, torch.cat(computed) if computed else []):
            known[keys[i]] = row
        known.update(self._exchange(missing, keys, known))
        if missing and self.ranks.local_rank == 0:
            self._save(known)
        return torch.stack([known[key] for key in keys])

    def _exchange(self, missing: list[int], keys: list[str], known: dict) -> dict[str, torch.Tensor]:
        """Every rank's computed rows on every rank (rank r computed missing[r::world])."""
        world = self.ranks.world_size
        if world == 1 or not missing:
            return {}
        width = next(iter(known.values())).numel() if known else 0
        width = int(runtime.gather_across_ranks(torch.tensor([width], dtype=torch.float64)).max().item())
        mine = [keys[i] for i in missing[self.ranks.rank::world]]
        flat = torch.cat([known[key] for key in mine]) if mine else torch.zeros(0)
        gathered = runtime.gather_across_ranks(flat.double()).float().cpu().reshape(-1, width)
        order = [keys[i] for rank in range(world) for i in missing[rank::world]]
        return dict(zip(order, gathered))

    def _load(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return dict(load_file(str(self.path))) if self.path.is_file() else {}

    def _save(self, rows: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        save_file({key: row.contiguous() for key, row in rows.items()}, str(partial))
        os.replace(partial, self.path)
