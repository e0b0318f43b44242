"""Plain-text tables for the CLI: columns padded to their widest cell, two spaces apart."""

from __future__ import annotations

from typing import Sequence


def table_lines(header: Sequence, rows: Sequence[Sequence]) -> list[str]:
    lines = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
