"""Tables for the CLI, through rich: fitted to the terminal's width, long cells cut with an ellipsis, the key
column (a run id, a recipe name) never cut, run states coloured on a terminal and plain when piped.

A table whose header is a `Header` with droppable columns sheds those, least important first, on a terminal too
narrow for it (as `kubectl get` and `sky status` do), before any essential column is cut: a dropped column is
whole elsewhere (`--json`, `launch status RUN`), a cut one is three characters of nothing. A droppable column that
stays may be cut, down to `_READABLE` characters; the essential ones (every column not droppable) are cut only when
they alone do not fit, widest first, and the key column never.

Piped output (a script, `| grep`) is never cut unless COLUMNS says how wide to be; scripts should prefer
`--json`.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from typing import Iterable, Optional, Sequence

_STATE_STYLES = {"finished": "green", "running": "cyan", "pending": "cyan", "launching": "cyan",
                 "restarting": "yellow", "stopping": "yellow", "stopped": "yellow", "pruned": "dim", "failed": "bold red",
                 "unknown": "dim"}
_UNCUT = 10_000
_GAP = 2  # spaces between columns; 1 where two do not fit
_READABLE = 10  # a droppable column is cut no narrower than this (or its header) before the next is dropped


class Header(tuple):
    """A table's column names with their priorities: `drop` names the columns a narrow terminal may drop, the least
    important first; every other column is essential."""

    drop: tuple[str, ...]

    def __new__(cls, names: Iterable[str], *, drop: Iterable[str] = ()):
        header = super().__new__(cls, names)
        header.drop = tuple(drop)
        unknown = [name for name in header.drop if name not in header]
        assert not unknown, f"no such column to drop: {unknown}"
        return header


def render_table(header: Sequence[str], rows: Sequence[Sequence], *, key_column: int = 0,
                 state_column: Optional[int] = None) -> str:
    """The table as text, ready for click.echo (ANSI colours only when stdout is a terminal). `header` may be a
    `Header`: then columns it lets drop go first where the terminal is too narrow (`key_column` is never dropped)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    terminal = sys.stdout.isatty()
    total = _width(terminal)
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    droppable = [list(header).index(name) for name in getattr(header, "drop", ())]
    assert key_column not in droppable, "the key column is never dropped"
    for gap in (_GAP, 1):
        kept = _kept(cells, total, droppable, key_column, gap)
        shown = [[row[i] for i in kept] for row in cells]
        widths = _fit(shown, total, kept.index(key_column), gap,
                      readable=[i for i, column in enumerate(kept) if column in droppable])
        if sum(widths) + gap * len(widths) <= total:
            break
    total = max(total, sum(widths) + gap * len(widths))  # a key too long for the terminal is still whole
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, gap, 0, 0), header_style="bold")
    for i, width in zip(kept, widths):
        table.add_column(_cut(str(header[i]), width), no_wrap=True)
    for row in rows:
        cells = [Text(_cut(str(row[i]), width)) for i, width in zip(kept, widths)]
        if state_column is not None and terminal and state_column in kept:
            cells[kept.index(state_column)].stylize(_STATE_STYLES.get(str(row[state_column]), ""))
        table.add_row(*cells)
    out = io.StringIO()
    Console(file=out, width=total, force_terminal=terminal, no_color=not terminal, highlight=False,
            soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


def _kept(cells: list[list[str]], width: int, droppable: list[int], key_column: int, gap: int) -> list[int]:
    """The columns shown: all of them, less the droppable ones in order until the rest fit with the essential
    ones whole and the droppable ones that stay no narrower than `_readable`."""
    kept = list(range(len(cells[0])))
    for column in droppable:
        floors = [_natural(cells, i) if i not in droppable else _readable(cells, i) for i in kept]
        if sum(floors) + gap * len(kept) <= width:
            break
        kept.remove(column)
    return kept


def _fit(cells: list[list[str]], width: int, key_column: int, gap: int, readable: Sequence[int] = ()) -> list[int]:
    """Column widths within `width`: first the `readable` (droppable) columns, widest first, give up a character at
    a time down to `_readable`; then every column, widest first, down to three (two letters and the ellipsis),
    never the key column."""
    widths = [_natural(cells, i) for i in range(len(cells[0]))]
    budget = width - gap * len(widths)  # rich pads every column, the last one too
    for floors in ([_readable(cells, i) if i in readable else w for i, w in enumerate(widths)],
                   [w if i == key_column else min(w, 3) for i, w in enumerate(widths)]):
        while sum(widths) > budget:
            shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    return widths


def _natural(cells: list[list[str]], column: int) -> int:
    return max(len(row[column]) for row in cells)


def _readable(cells: list[list[str]], column: int) -> int:
    return min(_natural(cells, column), max(_READABLE, len(cells[0][column])))


def _width(terminal: bool) -> int:
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    return shutil.get_terminal_size((_UNCUT, 24)).columns if terminal else _UNCUT


def dollars(value: float) -> str:
    """`$1,234.50`; under a cent, its two significant digits (`$0.0031`), so a short run is not shown as $0.00."""
    return f"${value:,.2f}" if value == 0 or abs(value) >= 0.01 else f"${value:.2g}"
