"""The small generated image set (`train.data.metadata: generated`): tiers a model can learn from the pixels.

Each image is a smooth two-colour gradient with noise on top; the better the tier, the brighter the image and
the weaker the noise (S: bright and clean … C: dark and grainy), with enough spread that tiers overlap a little.
The same bytes for the same seed on every machine (PNG, numpy's PCG64), so runs and tests compare exactly.
Written into `train.data.image_dir` once (every rank may call it: files appear atomically, by rename).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from spottrain.tasks.generated_files import png, write_atomically

from spottrain_contract.ranking import TIERS

METADATA = "metadata.csv"
PER_TIER = 40
SIZE = 64


def ensure_generated(image_dir: Path, seed: int = 0) -> Path:
    """The generated set in `image_dir` (written unless already there); returns its metadata.csv."""
    image_dir.mkdir(parents=True, exist_ok=True)
    metadata = image_dir / METADATA
    if metadata.is_file():
        return metadata
    rows = []
    for tier_index, tier in enumerate(TIERS):
        for n in range(PER_TIER):
            name = f"{tier.lower()}_{n:03d}.png"
            write_atomically(image_dir / name, png(_image(seed, tier_index, n)))
            rows.append((f"{tier.lower()}-{n:03d}", name, tier))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("image_id", "filename", "tier"))
    writer.writerows(rows)
    write_atomically(metadata, text.getvalue().encode())
    return metadata


def _image(seed: int, tier_index: int, n: int) -> np.ndarray:
    rng = np.random.default_rng([seed, tier_index, n])
    quality = (len(TIERS) - 1 - tier_index) / (len(TIERS) - 1)  # 1 for S … 0 for C
    quality = float(np.clip(quality + rng.normal(0, 0.12), 0, 1))
    ramp = np.linspace(0, 1, SIZE)[None, :, None]
    start, end = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    picture = start + (end - start) * ramp  # [1, SIZE, 3] gradient, the same on every row
    picture = np.repeat(picture, SIZE, axis=0) * (0.35 + 0.6 * quality)
    noise = rng.normal(0, 0.05 + 0.35 * (1 - quality), (SIZE, SIZE, 3))
    return (np.clip(picture + noise, 0, 1) * 255).astype(np.uint8)

