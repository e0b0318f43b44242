"""The ranker: a DINOv2 backbone (transformers) whose image features a projector MLP turns into one score.

Features are the backbone's normed CLS token next to the mean of its patch tokens (as transformers' DINOv2
classifier uses them). A frozen backbone stays in eval mode and builds no autograd graph. The model takes either
pixels or precomputed backbone features (`features=`), so a frozen backbone's features can be computed once per
image (see `features.py`) while the projector trains on them.

The loss is on score differences d = s_first − s_second with label y = +1 when the first image is the better:
logistic −log σ(y·d) (the Bradley–Terry likelihood) or margin max(0, m − y·d); a pair counts as ordered
correctly when y·d > 0 (a tie is wrong).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from spottrain_contract.ranking import TINY_BACKBONE


def build_backbone(model_options, seed: int) -> nn.Module:
    """The pretrained DINOv2 named by `backbone` (hub id or path), or the tiny one built from a config here."""
    from transformers import Dinov2Config, Dinov2Model

    if model_options.backbone == TINY_BACKBONE:
        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              patch_size=8, image_size=model_options.image_size)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return Dinov2Model(config)
    return Dinov2Model.from_pretrained(model_options.backbone)


def feature_size(backbone: nn.Module) -> int:
    return 2 * backbone.config.hidden_size


def backbone_features(backbone: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """[N, 2H]: the normed CLS token beside the mean patch token."""
    hidden = backbone(pixel_values=pixel_values).last_hidden_state
    return torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=-1)


class RankerHead(nn.Module):
    """Projector MLP to `output_dim`, then a linear score."""

    def __init__(self, in_features: int, output_dim: int, dropout: float):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(in_features, output_dim), nn.GELU(), nn.Dropout(dropout),
                                       nn.Linear(output_dim, output_dim), nn.GELU(), nn.Dropout(dropout))
        self.score = nn.Linear(output_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(self.projector(features)).squeeze(-1)


class PairwiseRanker(nn.Module):
    def __init__(self, backbone: nn.Module, head: RankerHead, freeze_backbone: bool):
        super().__init__()
        self.backbone, self.head, self.frozen = backbone, head, freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.backbone.embeddings.patch_embeddings.projection.weight.dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return backbone_features(self.backbone, pixel_values.to(dtype))

    def forward(self, pixel_values: Optional[torch.Tensor] = None,
                features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores [N] of images given as pixels, or as their backbone features."""
        if features is None:
            features = self.features(pixel_values)
        return self.head(features.to(self.head.score.weight.dtype))


def pair_loss(differences: torch.Tensor, labels: torch.Tensor, kind: str, margin: float) -> torch.Tensor:
    """Per-pair loss of score differences (first − second) under ±1 labels."""
    signed = labels * differences.float()
    return F.softplus(-signed) if kind == "logistic" else F.relu(margin - signed)


def ordered_correctly(differences: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (labels * differences.float() > 0).float()
