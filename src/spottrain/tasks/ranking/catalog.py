"""The image catalog: `metadata.csv` (image_id, filename, tier) read and checked row by row.

Every problem is one line naming the file, the row and the column, before anything is trained: a tier outside
S/A/B/C, an id seen twice, a file missing from the image directory.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spottrain_contract.errors import ConfigurationError
from spottrain_contract.ranking import TIERS

COLUMNS = ("image_id", "filename", "tier")


@dataclass(frozen=True)
class Catalog:
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    tiers: np.ndarray  # int8 per image: 0 for S (best) … 3 for C

    def __len__(self) -> int:
        return len(self.ids)


def read_catalog(metadata: Path, image_dir: Path, setting: str = "train.data.metadata",
                 image_setting: str = "train.data.image_dir") -> Catalog:
    """The catalog `metadata` lists, its files in `image_dir`; `setting` and `image_setting` name where the two
    came from in an error."""
    where = f"{setting} ({metadata})"
    try:
        with open(metadata, newline="", encoding="utf-8-sig") as source:
            reader = csv.DictReader(source)
            header, rows = reader.fieldnames, list(reader)
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    missing = [c for c in COLUMNS if c not in (header or ())]
    if missing:
        raise ConfigurationError(f"{where}: missing column(s) {', '.join(missing)}: expected {', '.join(COLUMNS)}")
    if not rows:
        raise ConfigurationError(f"{where}: no rows")
    ids, paths, tiers, seen = [], [], [], {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        image_id, filename, tier = (str(row[c] or "").strip() for c in COLUMNS)
        if not image_id:
            raise ConfigurationError(f"{where}: row {line}: empty image_id")
        if image_id in seen:
            raise ConfigurationError(f"{where}: row {line}: image_id {image_id!r} already used in row "
                                     f"{seen[image_id]}: expected unique ids")
        if tier not in TIERS:
            raise ConfigurationError(f"{where}: row {line}: tier {tier!r}: expected one of {', '.join(TIERS)}")
        path = image_dir / filename
        if not filename or not path.is_file():
            raise ConfigurationError(f"{where}: row {line}: filename {filename!r}: no such file in "
                                     f"{image_setting} ({image_dir})")
        seen[image_id] = line
        ids.append(image_id)
        paths.append(path)
        tiers.append(TIERS.index(tier))
    return Catalog(tuple(ids), tuple(paths), np.asarray(tiers, dtype=np.int8))
