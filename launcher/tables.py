"""Tables for the CLI, through rich: fitted to the terminal's width, long cells cut with an ellipsis, the key
column (a run id, a recipe name) never cut, run states coloured on a terminal and plain when piped.

Piped output (a script, `| grep`) is never cut unless COLUMNS says how wide to be; scripts should prefer
`--json`.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from typing import Optional, Sequence

_STATE_STYLES = {"finished": "green", "running": "cyan", "pending": "cyan", "launching": "cyan",
                 "restarting": "yellow", "stopping": "yellow", "stopped": "yellow", "failed": "bold red",
                 "unknown": "dim"}
_UNCUT = 10_000
_GAP = 2  # spaces between columns; 1 where two do not fit


def render_table(header: Sequence[str], rows: Sequence[Sequence], *, key_column: int = 0,
                 state_column: Optional[int] = None) -> str:
    """The table as text, ready for click.echo (ANSI colours only when stdout is a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    terminal = sys.stdout.isatty()
    total = _width(terminal)
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    gap = _GAP if sum(_fit(cells, total, key_column, _GAP)) + _GAP * len(header) <= total else 1
    widths = _fit(cells, total, key_column, gap)
    total = max(total, sum(widths) + gap * len(widths))  # a key too long for the terminal is still whole
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, gap, 0, 0), header_style="bold")
    for name, width in zip(header, widths):
        table.add_column(_cut(str(name), width), no_wrap=True)
    for row in rows:
        cells = [Text(_cut(str(cell), width)) for cell, width in zip(row, widths)]
        if state_column is not None and terminal:
            cells[state_column].stylize(_STATE_STYLES.get(str(row[state_column]), ""))
        table.add_row(*cells)
    out = io.StringIO()
    Console(file=out, width=total, force_terminal=terminal, no_color=not terminal, highlight=False,
            soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


def _fit(cells: list[list[str]], width: int, key_column: int, gap: int) -> list[int]:
    """Column widths within `width`: the widest column gives up a character at a time, down to three (two
    letters and the ellipsis), never the key column."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    floors = [w if i == key_column else min(w, 3) for i, w in enumerate(widths)]
    budget = width - gap * len(widths)  # rich pads every column, the last one too
    while sum(widths) > budget:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break
        widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    return widths


def _width(terminal: bool) -> int:
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    return shutil.get_terminal_size((_UNCUT, 24)).columns if terminal else _UNCUT
