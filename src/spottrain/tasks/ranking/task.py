"""The pairwise-ranking task: the catalog and its stored split, the epoch's pairs, the ranker, its loss, the
validation and test reports, prediction, and the export.

Training examples are pairs drawn per epoch (`pairs.py`); the loss and accuracy are on score differences
(`model.py`); validation and test score each image once and judge every cross-tier pair of the split from the
scores (`metrics.py`). With a frozen backbone and no augmentation the backbone's features are computed once per
image when the model is built (`features.py`) and batches carry features, not pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from spottrain import runtime
from spottrain.engine import consolidated_state_dict
from spottrain.run_files import RunFiles
from spottrain.tasks import NO_RUN_TAGS
from spottrain.tasks.ranking.catalog import Catalog, read_catalog
from spottrain.tasks.ranking.features import FeatureCache
from spottrain.tasks.ranking.generated import ensure_generated
from spottrain.tasks.ranking.images import Augmenter, image_processor, pixels, preprocessing_signature
from spottrain.tasks.ranking.metrics import ranking_report
from spottrain.tasks.ranking.model import (PairwiseRanker, RankerHead, build_backbone, feature_size,
                                           ordered_correctly, pair_loss)
from spottrain.tasks.ranking.pairs import PairCodec, cross_tier_pairs, epoch_pairs, labels
from spottrain.tasks.ranking.predict import predict
from spottrain.tasks.ranking.split import DataSplit, stratified_split
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.ranking import GENERATED, TIERS

SPLIT_FILE = "split.json"
HEAD_MODULE, BACKBONE_MODULE = "ranker_head", "ranker_backbone"


@dataclass
class PairBatch:
    """Pairs as pixels [B, 3, H, W] or backbone features [B, F] (`kind` names the model's keyword)."""

    first: torch.Tensor
    second: torch.Tensor
    labels: torch.Tensor  # ±1: +1 where the first image is the better
    kind: str  # "pixel_values" or "features"

    def to(self, device, non_blocking: bool = False) -> "PairBatch":
        return PairBatch(self.first.to(device, non_blocking=non_blocking),
                         self.second.to(device, non_blocking=non_blocking),
                         self.labels.to(device, non_blocking=non_blocking), self.kind)

    def pin_memory(self) -> "PairBatch":
        return PairBatch(self.first.pin_memory(), self.second.pin_memory(), self.labels.pin_memory(), self.kind)


class PairwiseRankingTask:
    learning_rate_metric = "learning_rate"  # the name the team's dashboards know (seed 003)
    run_tags = NO_RUN_TAGS

    def __init__(self, train, ranks, files: RunFiles):
        self.train, self.ranks, self.files = train, ranks, files
        self.options, data = train.ranking, train.data
        image_dir = Path(data.image_dir)
        metadata = ensure_generated(image_dir) if data.metadata == GENERATED else Path(data.metadata)
        self.catalog: Catalog = read_catalog(metadata, image_dir)
        fractions = (data.split.train, data.split.val, data.split.test)
        stored = files.once(SPLIT_FILE, lambda: stratified_split(self.catalog.tiers, fractions,
                                                                 data.split.seed).to_json(self.catalog))
        self.split = DataSplit.from_json(stored, self.catalog, files.key(SPLIT_FILE))
        self.codec = PairCodec(len(self.catalog), epochs=math.ceil(train.epochs) + 1)
        self.processor = image_processor(train.model.image_size)
        self.augment = Augmenter(data.augment, train.seed) if data.augment.enabled else None
        self.cached = train.model.freeze_backbone and self.augment is None and self.options.cache_features
        self.features: Optional[torch.Tensor] = None  # [images, F] on the CPU once the model is built, if cached
        self.val_pairs = self._pairs_of("val", data.val_pairs)
        self.test_set: Optional[Catalog] = self._labelled_set(data)  # read and checked before any weights load
        self.test_data = (f"the stored test split ({files.key(SPLIT_FILE)})" if self.test_set is None
                          else f"the labelled set {data.test_metadata} ({len(self.test_set)} images)")

    # --- training ----------------------------------------------------------------------------------------

    def training_indices(self, epoch: int) -> np.ndarray:
        first, second = epoch_pairs(self.catalog.tiers, self.split.train, self.train.seed, epoch,
                                    self.train.data.pairs_per_epoch)
        return self.codec.encode(epoch, first, second)

    def inference_model(self) -> PairwiseRanker:
        """The ranker as built (the projector freshly initialised from the global seed)."""
        model = self.train.model
        backbone = build_backbone(model, self.train.seed)
        return PairwiseRanker(backbone, RankerHead(feature_size(backbone), model.projector_output_dim,
                                                   model.dropout), model.freeze_backbone)

    def build_model(self) -> PairwiseRanker:
        ranker = self.inference_model()
        if self.cached:
            self.features = self._backbone_features(ranker)
        return ranker

    def batch(self, indices) -> PairBatch:
        epochs, first, second = self.codec.decode(indices)
        pair_labels = torch.from_numpy(labels(self.catalog.tiers, first, second))
        if self.cached:
            return PairBatch(self.features[first], self.features[second], pair_labels, "features")
        paths = self.catalog.paths
        keys = [(e, a, b, slot) for slot in (0, 1) for e, a, b in zip(epochs, first, second)]
        images = pixels(self.processor, [paths[i] for i in (*first, *second)], self.augment, keys)
        return PairBatch(images[: len(first)], images[len(first):], pair_labels, "pixel_values")

    def loss(self, model, batch: PairBatch):
        scores = model(**{batch.kind: torch.cat([batch.first, batch.second])})
        differences = scores[: len(batch.labels)] - scores[len(batch.labels):]
        loss = pair_loss(differences, batch.labels, self.options.loss, self.options.margin).mean()
        return loss, {"train/loss": loss.detach(),
                      "train/accuracy": ordered_correctly(differences, batch.labels).mean()}

    # --- judging -----------------------------------------------------------------------------------------

    def evaluate(self, model) -> dict[str, float]:
        """val/loss, val/accuracy (and per gap, Kendall's τ) over the validation pairs; every rank scores every
        validation image (the same forward passes on every rank, as ZeRO-3 needs)."""
        return self._report(model, "val", self.val_pairs)

    def test_metrics(self, model) -> dict[str, float]:
        """The stored test split: every cross-tier pair of its images; with `train.data.test_metadata` (`launch eval
        RUN --option labels=CSV`), every cross-tier pair of that labelled set's images instead, the same report."""
        if self.test_set is None:
            return self._report(model, "test", self._pairs_of("test", None))
        labelled = self.test_set
        first, second = cross_tier_pairs(labelled.tiers, np.arange(len(labelled)))
        return ranking_report(self._scores_of_paths(model, labelled.paths), labelled.tiers, first, second,
                              self.options.loss, self.options.margin, "test")

    @staticmethod
    def _labelled_set(data) -> Optional[Catalog]:
        """`train.data.test_metadata` read like metadata.csv (its files in test_image_dir, else beside it), with
        images of two tiers at least; None without it."""
        if data.test_metadata is None:
            return None
        metadata = Path(data.test_metadata)
        if data.test_image_dir is None:
            image_dir, image_setting = metadata.parent, "the CSV's directory"
        else:
            image_dir, image_setting = Path(data.test_image_dir), "train.data.test_image_dir"
        labelled = read_catalog(metadata, image_dir, "train.data.test_metadata", image_setting)
        present = sorted(set(labelled.tiers.tolist()))
        if len(present) < 2:
            raise ConfigurationError(f"train.data.test_metadata ({metadata}): every row has tier "
                                     f"{TIERS[present[0]]}: pairs need images of at least two tiers")
        return labelled

    def _report(self, model, part: str, pairs: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        members = self.split.part(part)
        scores = self.scores(model, members)
        position = np.full(len(self.catalog), -1, dtype=np.int64)
        position[members] = np.arange(len(members))
        return ranking_report(scores, self.catalog.tiers[members], position[pairs[0]], position[pairs[1]],
                              self.options.loss, self.options.margin, part)

    def _pairs_of(self, part: str, limit: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
        """Every cross-tier pair of a split part, or a fixed draw of `limit` of them."""
        first, second = cross_tier_pairs(self.catalog.tiers, self.split.part(part))
        if limit is not None and limit < len(first):
            keep = np.sort(np.random.default_rng([self.train.data.split.seed, len(first)]).choice(
                len(first), limit, replace=False))
            first, second = first[keep], second[keep]
        return first, second

    @torch.no_grad()
    def scores(self, model, members: Sequence[int]) -> torch.Tensor:
        """[len(members)] float32 scores on the CPU, `feature_batch` images per forward pass."""
        if not (self.cached and self.features is not None):
            return self._scores_of_paths(model, [self.catalog.paths[i] for i in members])
        step = self.options.feature_batch
        return torch.cat([model(features=self.features[list(members[i:i + step])].to(runtime.device())).float().cpu()
                          for i in range(0, len(members), step)])

    def pixels_of(self, paths: Sequence[Path]) -> torch.Tensor:
        return pixels(self.processor, paths).to(runtime.device())

    def _backbone_features(self, ranker: PairwiseRanker) -> torch.Tensor:
        cache = FeatureCache(Path(self.train.checkpoint.local_dir) / self.files.run_id / "features",
                             f"{preprocessing_signature(self.processor)}-{self._backbone_signature(ranker)}",
                             self.ranks)
        backbone = ranker.backbone.to(runtime.device())

        @torch.no_grad()
        def compute(paths):
            return ranker.features(self.pixels_of(paths))

        features = cache.features(list(self.catalog.paths), compute, self.options.feature_batch)
        backbone.to("cpu")  # DeepSpeed places the whole model, in its precision
        return features

    def _backbone_signature(self, ranker: PairwiseRanker) -> str:
        import hashlib

        identity = json.dumps({"backbone": self.train.model.backbone, "seed": self.train.seed,
                               "config": ranker.backbone.config.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    def predict(self, model, inputs: Sequence[str], out: Optional[Path]) -> str:
        """Two images, a CSV of pairs or a folder (see `predict.py`), scored by `model`."""
        return predict(lambda paths: self._scores_of_paths(model, paths), inputs, out)

    @torch.no_grad()
    def _scores_of_paths(self, model, paths: Sequence[Path]) -> torch.Tensor:
        step = self.options.feature_batch
        return torch.cat([model(pixel_values=self.pixels_of(paths[i:i + step])).float().cpu()
                          for i in range(0, len(paths), step)])

    # --- weights -----------------------------------------------------------------------------------------

    def checkpoint_modules(self, model: PairwiseRanker) -> dict[str, torch.nn.Module]:
        """The projector at every checkpoint, the backbone too when it trains: what `launch eval` and
        `launch predict` load (any checkpoint, any world size, no DeepSpeed)."""
        modules = {HEAD_MODULE: model.head}
        if not model.frozen:
            modules[BACKBONE_MODULE] = model.backbone
        return modules

    def export(self, model: PairwiseRanker, out_dir: Path) -> None:
        """backbone/ (from_pretrained), head.safetensors, the image processor and ranker.json."""
        zero_stage = self.train.deepspeed.zero_stage
        head = consolidated_state_dict(model.head, zero_stage, self.ranks.is_main)
        backbone = consolidated_state_dict(model.backbone, zero_stage, self.ranks.is_main)
        if not self.ranks.is_main:
            return
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        model.backbone.save_pretrained(out_dir / "backbone", state_dict=backbone)
        save_file({k: v.contiguous() for k, v in head.items()}, str(out_dir / "head.safetensors"))
        self.processor.save_pretrained(out_dir)
        options = self.train.model
        (out_dir / "ranker.json").write_text(json.dumps({
            "feature_size": feature_size(model.backbone), "projector_output_dim": options.projector_output_dim,
            "dropout": options.dropout, "image_size": options.image_size, "tiers": "S>A>B>C",
            "features": "concat(normed CLS token, mean patch token)"}, indent=1))
