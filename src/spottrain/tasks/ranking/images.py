"""Images to pixel tensors: the transformers image processor (resize to a square, ImageNet mean and std, as the
seed's transform), and the optional training augmentation drawn from (seed, epoch, image slot) so that a resumed
run sees exactly the pixels an uninterrupted one did."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_processor(image_size: int):
    """A BitImageProcessor (DINOv2's) that resizes to image_size² without cropping. Its PIL implementation where
    transformers has one: it needs no torchvision."""
    import transformers

    processor = getattr(transformers, "BitImageProcessorPil", None) or transformers.BitImageProcessor
    return processor(do_resize=True, size={"height": image_size, "width": image_size}, do_center_crop=False,
                     do_rescale=True, do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                     do_convert_rgb=True)


def preprocessing_signature(processor) -> str:
    """What the pixels of an image depend on besides its bytes: the processor's settings."""
    settings = {k: v for k, v in processor.to_dict().items() if k != "image_processor_type"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


class Augmenter:
    """Flip, rotation and brightness/contrast jitter of PIL images, each image's draws from its own seed."""

    def __init__(self, options, seed: int):
        self.options, self.seed = options, seed

    def __call__(self, image, key: Sequence[int]):
        from PIL import ImageEnhance

        o, rng = self.options, np.random.default_rng([self.seed, *map(int, key)])
        flip, angle, jitter = rng.random(), rng.uniform(-1, 1), rng.uniform(-1, 1, 2)
        if o.hflip and flip < 0.5:
            image = image.transpose(0)  # PIL.Image.Transpose.FLIP_LEFT_RIGHT
        if o.rotation_degrees:
            image = image.rotate(float(angle * o.rotation_degrees), resample=2)  # bilinear
        if o.color_jitter:
            image = ImageEnhance.Brightness(image).enhance(1 + float(jitter[0]) * o.color_jitter)
            image = ImageEnhance.Contrast(image).enhance(1 + float(jitter[1]) * o.color_jitter)
        return image


def pixels(processor, paths: Sequence[Path], augment: Optional[Augmenter] = None,
           keys: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
    """[N, 3, H, W] float32 pixel values of these images (augmented with `keys` when an augmenter is given)."""
    images = [load_rgb(path) for path in paths]
    if augment is not None:
        images = [augment(image, key) for image, key in zip(images, keys)]
    return processor(images=images, return_tensors="pt")["pixel_values"]
