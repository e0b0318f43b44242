"""What the tasks' generated datasets share: images as PNG bytes, and files that appear whole or not at all (every
rank of a run may write the same set at once; a reader never sees a file half written)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def png(pixels: np.ndarray) -> bytes:
    """[H, W, 3] uint8 pixels as a PNG file's bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
