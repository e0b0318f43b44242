"""The small generated image-text set (`train.data.train_csv: generated`): questions answerable from the pixels.

Each image is one coloured shape (red, green, blue or yellow × square, circle or triangle) on a plain grey
background, its size, place and shade varying a little, with light noise; each row asks its colour, its shape or
for a description, and the answer follows from the picture ("red", "circle", "a red circle"), so a model can
learn it and exact match can reach 1. The same bytes for the same seed on every machine (PNG, numpy's PCG64), so
runs and tests compare exactly. Written into `train.data.generated_dir` once (every rank may call it: files
appear atomically, by rename, the CSVs last).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from spottrain.tasks.generated_files import png, write_atomically

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
QUESTIONS = (("What colour is the shape?", "{colour}"), ("What shape is it?", "{shape}"),
             ("Describe the image.", "a {colour} {shape}"))
SPLITS = {"train": 96, "val": 16, "test": 16}  # rows; the test CSV names its columns query and annotation
COLUMNS = {"train": ("url", "instruction", "response"), "val": ("url", "instruction", "response"),
           "test": ("url", "query", "annotation")}
SIZE = 48
IMAGES = "images"


def ensure_generated(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """The generated set in `out_dir` (written unless already there); returns the CSV of each split."""
    csvs = {split: out_dir / f"{split}.csv" for split in SPLITS}
    if all(path.is_file() for path in csvs.values()):
        return csvs
    (out_dir / IMAGES).mkdir(parents=True, exist_ok=True)
    tables = {}
    for split_index, (split, rows) in enumerate(SPLITS.items()):
        table = []
        for n in range(rows):
            colour, shape, (question, answer) = _row(n + 12 * split_index)
            name = f"{IMAGES}/{split}_{n:03d}.png"
            write_atomically(out_dir / name, png(_image(seed, split_index, n, colour, shape)))
            table.append((name, question, answer.format(colour=colour, shape=shape)))
        tables[split] = table
    for split, path in csvs.items():
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS[split])
        writer.writerows(tables[split])
        write_atomically(path, text.getvalue().encode())
    return csvs


def _row(k: int) -> tuple[str, str, tuple[str, str]]:
    """Row k of a cycle of 36 through every (colour, shape, question); any 12 rows in a row ask each question."""
    colours = list(COLOURS)
    return colours[k % len(colours)], SHAPES[k % len(SHAPES)], QUESTIONS[(k + k // 12) % len(QUESTIONS)]


def _image(seed: int, split_index: int, n: int, colour: str, shape: str) -> np.ndarray:
    rng = np.random.default_rng([seed, split_index, n])
    picture = np.full((SIZE, SIZE, 3), rng.uniform(110, 150), dtype=float)  # a plain grey background
    half = rng.uniform(10, 16)
    cy, cx = rng.uniform(half + 2, SIZE - half - 2, 2)
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    if shape == "square":
        inside = (abs(y - cy) <= half) & (abs(x - cx) <= half)
    elif shape == "circle":
        inside = (y - cy) ** 2 + (x - cx) ** 2 <= half ** 2
    else:  # a triangle pointing up: apex at the top, base at the bottom
        inside = (y <= cy + half) & (abs(x - cx) <= (y - (cy - half)) / 2)
    picture[inside] = np.array(COLOURS[colour]) * rng.uniform(0.85, 1.0)
    picture += rng.normal(0, 6, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)

