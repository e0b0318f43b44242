"""The task's CSV files: (image, text, text) rows, read and checked before anything is trained.

Each row names its image relative to the CSV's directory (or absolutely); a missing column, an empty cell or a
missing image is one line naming the file, the row and the column. Images are opened when a batch is built, not
here: a CSV of a million rows is checked by path only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from spottrain_contract.errors import ConfigurationError


@dataclass(frozen=True)
class Example:
    image: Path
    prompt: str  # the instruction (training) or the query (evaluation)
    target: str  # the response (training) or the annotation (evaluation)


def read_examples(path: Path, key: str, columns: tuple[str, str, str]) -> list[Example]:
    """Rows of `path` (the recipe's `key`) as examples, from its (image, prompt, target) columns."""
    where = f"{key} ({path})"
    try:
        with open(path, newline="", encoding="utf-8-sig") as source:
            reader = csv.DictReader(source)
            header, rows = reader.fieldnames or [], list(reader)
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise ConfigurationError(f"{where}: missing column(s) {', '.join(missing)}: expected {', '.join(columns)} "
                                 f"(train.data.*_column), found {', '.join(header) or 'no header'}")
    if not rows:
        raise ConfigurationError(f"{where}: no rows")
    examples = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        image, prompt, target = (str(row[c] or "").strip() for c in columns)
        for column, value in zip(columns, (image, prompt, target)):
            if not value:
                raise ConfigurationError(f"{where}: row {line}: column {column} is empty")
        image_path = (Path(image) if Path(image).is_absolute() else path.parent / image).absolute()
        if not image_path.is_file():
            raise ConfigurationError(f"{where}: row {line}: column {columns[0]}: no image at {image_path}")
        examples.append(Example(image_path, prompt, target))
    return examples
