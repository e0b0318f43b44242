"""The options of the pairwise quality ranker (seed 003): what `pairwise_ranking` trains.

Images with a quality tier (S > A > B > C) are split once per run (stratified by tier), and a DINOv2 backbone
plus a projector MLP learn a scalar score such that the better image of a pair scores higher. A recipe writes
`train.model.backbone`, `train.data.metadata` and `train.ranking.loss`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from spottrain_contract.schema import FieldProblem, PositiveInt, Strict, above, between

TIERS = ("S", "A", "B", "C")  # best first
GENERATED = "generated"  # train.data.metadata: the small generated image set (tier visible in the pixels)
TINY_BACKBONE = "tiny"  # train.model.backbone: a small DINOv2 built from a config in code (CPU runs, tests)


class RankerModel(Strict):
    """A DINOv2 backbone (transformers) and a projector MLP to a scalar score."""

    backbone: str = Field("facebook/dinov2-large", description="A Hugging Face DINOv2 id or local path, or "
                                                               "'tiny' for the small in-code model.")
    freeze_backbone: bool = Field(True, description="Train only the projector (the backbone's features can "
                                                    "then be computed once per image, see ranking.cache_features).")
    projector_output_dim: PositiveInt = Field(256, description="Width of the projector's output, before the score.")
    dropout: Annotated[float, between(0, 0.9)] = Field(0.1, description="Dropout in the projector.")
    image_size: Annotated[int, between(14, 4096)] = Field(768, description="Images are resized to this square "
                                                                           "(the seed's 768×768).")


class Split(Strict):
    """Stratified by tier; computed once per run and stored with it (`<run id>/task/split.json`)."""

    train: Annotated[float, between(0, 1)] = Field(0.8, description="Fraction of the images trained on.")
    val: Annotated[float, between(0, 1)] = Field(0.1, description="Fraction of the images validated on.")
    test: Annotated[float, between(0, 1)] = Field(0.1, description="Fraction of the images held out for "
                                                                   "`launch eval`.")
    seed: int = Field(42, description="Seed of the split (independent of train.seed).")

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6 or min(self.train, self.val, self.test) <= 0:
            raise FieldProblem("train", f"expected three positive fractions summing to 1, got {self.train} + "
                                        f"{self.val} + {self.test} = {total:g}")
        return self


class Augmentation(Strict):
    """Training images only, drawn from (seed, epoch, pair): a resumed run sees the same pixels."""

    hflip: bool = Field(False, description="Mirror half of the images.")
    rotation_degrees: Annotated[float, between(0, 180)] = Field(0.0, description="Rotate by up to ± this.")
    color_jitter: Annotated[float, between(0, 1)] = Field(0.0, description="Brightness and contrast scaled by up "
                                                                           "to 1 ± this.")

    @property
    def enabled(self) -> bool:
        return self.hflip or self.rotation_degrees > 0 or self.color_jitter > 0


class RankingData(Strict):
    metadata: str = Field(description="CSV with image_id, filename, tier (S/A/B/C), or 'generated' for the small "
                                      "generated set (written to image_dir).")
    image_dir: str = Field(description="Directory of the images (local path or a volume's mount).")
    split: Split = Field(default_factory=Split, description="How the images are divided into train, val and "
                                                            "test (fractions summing to 1).")
    pairs_per_epoch: Optional[PositiveInt] = Field(
        None, description="Training pairs drawn each epoch, every tier gap equally; unset: every pair of training "
                          "images of different tiers (O(N²)).")
    val_pairs: Optional[PositiveInt] = Field(
        None, description="Validation pairs scored at most (a fixed draw); unset: every pair of the split.")
    augment: Augmentation = Field(
        default_factory=Augmentation,
        description="Random flips, rotations and brightness/contrast jitter of the training images.")
    test_metadata: Optional[str] = Field(
        None, description="A labelled set to judge instead of the run's stored test split (`launch eval RUN "
                          "--option labels=PATH`): a CSV of image_id, filename, tier like metadata; every pair of "
                          "its images of different tiers is judged. Unset: the stored split's test images.")
    test_image_dir: Optional[str] = Field(
        None, description="The directory of test_metadata's files (`--option labels_images=DIR`); unset: the "
                          "directory the CSV is in.")

    @model_validator(mode="after")
    def _test_images_of_a_test_set(self):
        if self.test_image_dir is not None and self.test_metadata is None:
            raise FieldProblem("test_image_dir", "expected test_metadata too (the labelled set whose files these "
                                                 "are)")
        return self


class RankingOptions(Strict):
    loss: Literal["logistic", "margin"] = Field(
        "logistic", description="logistic: −log σ(s_better − s_worse); margin: max(0, margin − (s_better − "
                                "s_worse)).")
    margin: Annotated[float, above(0)] = Field(1.0, description="Margin of the margin loss.")
    cache_features: bool = Field(True, description="With a frozen backbone and no augmentation, compute each "
                                                   "image's backbone features once per run, not once per pair.")
    feature_batch: PositiveInt = Field(32, description="Images per backbone forward when computing features "
                                                       "and scores.")


class PairwiseRankingStage(Strict):
    """Pairwise quality ranking of images by tier (seed 003)."""

    model: RankerModel = Field(default_factory=RankerModel, description="The scoring model: backbone and "
                                                                        "projector.")
    data: RankingData = Field(description="The images, their tiers and how they are split and paired.")
    ranking: RankingOptions = Field(default_factory=RankingOptions,
                                    description="The pairwise loss and how backbone features are computed.")
