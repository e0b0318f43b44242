"""How a sweep is explored: a recipe's `search:` beside its `sweep:` axes.

    search:
      method: asha                 # grid (every cell to the end, the default), asha, hyperband or median
      metric: val/loss             # read from each cell's MLflow run at its evaluations
      mode: min
      budget: train.max_steps      # the dotted key that grows; its value in the cell's recipe is the full budget
      min_budget: 5                # the first rung (asha, hyperband); median: no judgement before it
      reduction_factor: 3          # rungs at min_budget × 3^k; the best third of a rung goes on
      max_parallel: 2
      trials: 12                   # sample this many cells (Optuna's sampler) instead of taking the grid
      space:
        train.optim.lr: {log_uniform: [1.0e-5, 1.0e-3]}
        train.optim.weight_decay: {choice: [0.0, 0.01, 0.1]}

Progress is in the budget's unit (optimizer steps for `*.max_steps`, epochs for `*.epochs`), never wall time.
Without `trials` the cells are the grid of the axes; with it, each trial samples one entry of every axis and a
value of every `space` key. The search is a way to resolve a recipe into runs, not a setting of one run, so a
shipped recipe leaves it behind. Standard library and pydantic only: the launcher's Optuna glue reads this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spottrain_contract.sweep import Axes, Cell

METHODS = ("grid", "asha", "hyperband", "median")
PRUNING = ("asha", "hyperband", "median")
_KINDS = {
    "log_uniform": "a float drawn on a log scale between two positive bounds, e.g. {log_uniform: [1.0e-5, 1.0e-3]}",
    "uniform": "a float between two bounds, e.g. {uniform: [0.0, 0.3]}",
    "int": "an integer between two bounds, inclusive, e.g. {int: [1, 8]}",
    "log_int": "an integer on a log scale between two positive bounds, e.g. {log_int: [16, 1024]}",
    "choice": "one of a list of values, e.g. {choice: [0.0, 0.01, 0.1]}",
}
TRIAL_PREFIX = "trial-"  # a sampled cell's name: trial-000, trial-001, … (Optuna's trial number)


@dataclass(frozen=True)
class Distribution:
    """One `space` entry: `kind` (a key of _KINDS) and its bounds or choices."""

    kind: str
    values: tuple

    def as_written(self) -> dict:
        return {self.kind: list(self.values)}


def _distribution(written: Any) -> Distribution:
    if isinstance(written, Distribution):
        return written
    if not isinstance(written, dict) or len(written) != 1:
        raise ValueError(f"expected one of {', '.join(_KINDS)} with its values, e.g. {{log_uniform: [1.0e-5, "
                         f"1.0e-3]}}, got {written!r}")
    ((kind, values),) = written.items()
    if kind not in _KINDS:
        raise ValueError(f"unknown distribution {kind!r}: expected {', '.join(_KINDS)}")
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind}: expected {_KINDS[kind]}")
    if kind != "choice":
        numbers = int if kind in ("int", "log_int") else (int, float)
        if len(values) != 2 or not all(isinstance(v, numbers) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{kind}: expected {_KINDS[kind]}, got {values!r}")
        low, high = values
        if not low < high:
            raise ValueError(f"{kind}: the low bound must be below the high one, got {values!r}")
        if kind.startswith("log") and low <= 0:
            raise ValueError(f"{kind}: expected positive bounds on a log scale, got {values!r}")
    return Distribution(kind, tuple(values))


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    method: Literal["grid", "asha", "hyperband", "median"] = Field(
        "grid", description="grid: every cell trains to the end; asha: asynchronous successive halving (a cell "
                            "goes on past a rung if it is in the best 1/reduction_factor of the cells that reached "
                            "it); hyperband: ASHA over several brackets; median: stop a cell whose metric is worse "
                            "than the median of finished cells' at the same point.")
    metric: Optional[str] = Field(None, description="The MLflow metric that judges a cell, e.g. val/loss.")
    mode: Literal["min", "max"] = Field("min", description="Whether a lower (min) or higher (max) metric is better.")
    budget: Optional[str] = Field(None, description="The dotted key that grows with training: train.max_steps or "
                                                    "train.epochs (a command recipe: its config's key); progress is "
                                                    "counted in its unit.")
    min_budget: Optional[float] = Field(None, gt=0, description="asha, hyperband: the first rung, in the budget's "
                                                                "unit; median: no cell is judged before it.")
    reduction_factor: int = Field(3, ge=2, le=10, description="Rungs at min_budget × reduction_factor^k; the "
                                                             "best 1/reduction_factor of a rung goes on.")
    max_parallel: Optional[int] = Field(None, ge=1, le=1000, description="At most this many cells live at once.")
    trials: Optional[int] = Field(None, ge=1, le=10000, description="Sample this many cells (each axis's entry "
                                                                   "and each space key's value) instead of "
                                                                   "taking the grid.")
    space: dict[str, Any] = Field(default_factory=dict, description="Dotted keys drawn per trial: "
                                  + "; ".join(f"{k}: {v}" for k, v in _KINDS.items()) + ".")
    sampler: Literal["tpe", "random"] = Field("tpe", description="How trials are drawn (Optuna's TPE or random).")
    seed: int = Field(0, description="The sampler's seed: the same search draws the same trials.")

    @field_validator("space")
    @classmethod
    def _distributions(cls, space: dict) -> dict:
        checked = {}
        for key, written in space.items():
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise ValueError(f"expected dotted keys as --override takes them (train.optim.lr), got {key!r}")
            try:
                checked[key] = _distribution(written)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return checked

    @model_validator(mode="after")
    def _complete(self) -> "Search":
        if self.method == "grid":
            if self.space or self.trials:
                raise ValueError("method grid trains every cell of the axes: a space or trials needs asha, "
                                 "hyperband or median")
            return self
        missing = [key for key in ("metric", "budget") if getattr(self, key) is None]
        if self.method in ("asha", "hyperband") and self.min_budget is None:
            missing.append("min_budget")
        if missing:
            raise ValueError(f"method {self.method} needs {', '.join(missing)}")
        if self.space and self.trials is None:
            raise ValueError("a space is sampled: say how many trials (trials: N)")
        return self

    @property
    def prunes(self) -> bool:
        return self.method in PRUNING

    def rungs(self, max_budget: float) -> list[float]:
        """Where cells are judged, in the budget's unit (asha, hyperband): min_budget × reduction_factor^k below
        the full budget. None for grid; median judges at every evaluation from min_budget on."""
        if self.method not in ("asha", "hyperband") or self.min_budget is None:
            return []
        found, k = [], 0
        while self.min_budget * self.reduction_factor ** k < max_budget:
            found.append(self.min_budget * self.reduction_factor ** k)
            k += 1
        return found


def budget_value(document: dict, key: str) -> Optional[Union[int, float]]:
    """The budget key's number in a resolved recipe document (None if absent or not a number)."""
    node: Any = document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node) else None


def trial_cell_name(number: int) -> str:
    return f"{TRIAL_PREFIX}{number:03d}"


def cell_from(choice: dict[str, Any], axes: Axes, search: Search, name: str) -> Cell:
    """The cell one choice makes (an entry of every axis, a value of every space key: a drawn trial, or a corner of
    the space): the entries' overrides, then the space's values."""
    entries = {axis: choice[axis] for axis in axes}
    overrides: dict[str, Any] = {}
    for axis, entry in entries.items():
        overrides.update(axes[axis][entry])
    overrides.update({key: choice[key] for key in search.space})
    return Cell(name, entries, overrides)
