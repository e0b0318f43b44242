"""Sweeps: a recipe's axes, each a set of named entries of dotted overrides; their product is the grid, one run
per cell.

    sweep:
      lr:   {lr_1e4: {train.optim.lr: 1.0e-4}, lr_3e4: {train.optim.lr: 3.0e-4}}
      clip: {clip_0.5: {train.optim.grad_clip: 0.5}, clip_1: {}}

makes four cells, `lr_1e4__clip_0.5`, `lr_1e4__clip_1`, `lr_3e4__clip_0.5`, `lr_3e4__clip_1`: axes in the order
the recipe writes them, each cell's name its entries' names joined by `__`. A cell is resolved like a profile:
after the recipe's profile and before `--override`s (`recipe.load_recipe(cell=...)`), so its run trains exactly
what its entries say and the launch's overrides still apply to every cell. Names are restricted so that a cell's
name can stand in a run id and a job name on every target.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

CELL_SEPARATOR = "__"
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_JOB_NAME_LENGTH = 63


def check_name(value: str) -> str:
    """An axis, entry or sweep name; anything else raises ValueError saying what a name may hold."""
    if not _NAME.match(value):
        raise ValueError(f"expected lowercase letters and digits with single '.', '_' or '-' between them, "
                         f"got {value!r}")
    return value


def _dotted_keys(entry: dict[str, Any]) -> dict[str, Any]:
    for key in entry:
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ValueError(f"expected dotted keys as --override takes them (train.optim.lr), got {key!r}")
    return entry


def _entries(axis: dict) -> dict:
    if not axis:
        raise ValueError("expected at least one entry (name: {dotted.key: value, ...})")
    return axis


SweepName = Annotated[str, AfterValidator(check_name)]
Entry = Annotated[dict[str, Any], BeforeValidator(lambda value: {} if value is None else value),
                  AfterValidator(_dotted_keys)]  # an entry left empty changes nothing: the axis's control
Axis = Annotated[dict[SweepName, Entry], AfterValidator(_entries)]
Axes = dict[SweepName, Axis]


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: which entry of each axis, and the overrides they add up to (later axes win)."""

    name: str
    entries: dict[str, str] = field(default_factory=dict)  # axis -> entry, in axis order
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, in the order applied

    def as_origin(self) -> dict:
        """What a shipped recipe records of its cell (`recipe.LoadedRecipe.shipped`)."""
        return {"name": self.name, "entries": dict(self.entries), "overrides": dict(self.overrides)}

    @classmethod
    def from_origin(cls, origin: dict) -> "Cell":
        return cls(name=origin["name"], entries=dict(origin.get("entries") or {}),
                   overrides=dict(origin.get("overrides") or {}))


def cells(axes: Axes) -> list[Cell]:
    """The grid: every combination of one entry per axis, the first axis varying slowest; none without axes."""
    if not axes:
        return []
    names = list(axes)
    grid = []
    for chosen in itertools.product(*(list(axes[axis]) for axis in names)):
        overrides: dict[str, Any] = {}
        for axis, entry in zip(names, chosen):
            overrides.update(axes[axis][entry])
        grid.append(Cell(CELL_SEPARATOR.join(chosen), dict(zip(names, chosen)), overrides))
    return grid


def cell_named(axes: Axes, name: str) -> Cell:
    """The cell called `name`; a name outside the grid raises ValueError listing the cells."""
    for cell in cells(axes):
        if cell.name == name:
            return cell
    raise ValueError(f"no cell {name!r} in this sweep (cells: {', '.join(c.name for c in cells(axes))})")


def cell_job_name(name: str, cell: str) -> str:
    """A job name for the cell's run that every platform accepts (lowercase letters, digits and dashes, at most
    63 characters): the recipe's `name`, a dash and the cell's name with every other character a dash."""
    slug = re.sub(r"[^a-z0-9]+", "-", cell.lower()).strip("-")
    return f"{name}-{slug}"[:_JOB_NAME_LENGTH].rstrip("-")
