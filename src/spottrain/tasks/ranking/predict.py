"""Prediction with a trained ranker, the three ways the team asks for it (seed 003, "inference"):

    IMAGE_A IMAGE_B     which of two images is better: the winner's path on a line saying `winner`, and the
                        score difference
    PAIRS.csv           a CSV with image1,image2 columns: one JSON line per pair (both scores, the winner,
                        the confidence |score1 − score2|), in the CSV's order
    FOLDER              every image in a folder, scored and ranked best first: a CSV of rank,path,score

Results go to `out` when given (JSONL or CSV), else to standard output.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from spottrain_contract.errors import ConfigurationError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

Scorer = Callable[[Sequence[Path]], torch.Tensor]  # image paths → their scores


def predict(score: Scorer, inputs: Sequence[str], out: Optional[Path]) -> str:
    """The text of the prediction for `inputs` (also written to `out` when given)."""
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise ConfigurationError(f"predict: {path}: no such file or folder")
    if len(paths) == 2 and all(p.is_file() for p in paths):
        text = _two_images(score, paths)
    elif len(paths) == 1 and paths[0].is_dir():
        text = _ranked_folder(score, paths[0])
    elif len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        text = _pairs_file(score, paths[0])
    else:
        raise ConfigurationError(f"predict: expected IMAGE_A IMAGE_B, a CSV of pairs (image1,image2) or a folder "
                                 f"of images, got {' '.join(inputs)}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text


def _two_images(score: Scorer, paths: list[Path]) -> str:
    a, b = score(paths).tolist()
    winner = paths[0] if a > b else paths[1]
    return (f"winner: {winner}\nscore difference: {abs(a - b):.4f}\n"
            f"scores: {paths[0]} {a:.4f}, {paths[1]} {b:.4f}\n")


def _pairs_file(score: Scorer, path: Path) -> str:
    with path.open(newline="", encoding="utf-8-sig") as source:
        reader = csv.DictReader(source)
        if not {"image1", "image2"} <= set(reader.fieldnames or ()):
            raise ConfigurationError(f"predict: {path}: expected columns image1,image2, got "
                                     f"{','.join(reader.fieldnames or ())}")
        rows = list(reader)
    base = path.parent
    pairs = [(_image(base, row["image1"], path, line), _image(base, row["image2"], path, line))
             for line, row in enumerate(rows, start=2)]
    unique = sorted({p for pair in pairs for p in pair})
    scored = dict(zip(unique, score(unique).tolist())) if unique else {}
    lines = []
    for (first, second), row in zip(pairs, rows):
        s1, s2 = scored[first], scored[second]
        lines.append(json.dumps({"image1": row["image1"], "image2": row["image2"], "score1": s1, "score2": s2,
                                 "winner": "image1" if s1 > s2 else "image2", "confidence": abs(s1 - s2)}))
    return "".join(line + "\n" for line in lines)


def _image(base: Path, name: str, source: Path, line: int) -> Path:
    path = Path(name) if Path(name).is_absolute() else base / name
    if not path.is_file():
        raise ConfigurationError(f"predict: {source}: row {line}: {name!r}: no such image")
    return path


def _ranked_folder(score: Scorer, folder: Path) -> str:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ConfigurationError(f"predict: {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    scores = score(images).tolist()
    ranked = sorted(zip(images, scores), key=lambda item: (-item[1], str(item[0])))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("rank", "path", "score"))
    writer.writerows((rank, str(path), f"{value:.6f}") for rank, (path, value) in enumerate(ranked, start=1))
    return text.getvalue()
