"""Early stopping: the run ends once its best metric has stopped improving.

It watches the metric that picks the best checkpoint (`checkpoint.best_metric`, `best_mode`), so "better" means
one thing in a run. Its count is part of every checkpoint: a run killed mid-epoch and resumed stops at the same
evaluation an uninterrupted run stops at, and a run resumed from the checkpoint it stopped at does not train on.
"""

from __future__ import annotations

from typing import Optional

from spottrain_contract.schema import EarlyStopping as EarlyStoppingSettings


class EarlyStopping:
    def __init__(self, settings: Optional[EarlyStoppingSettings], metric: str, mode: str):
        self.settings, self.metric, self.mode = settings, metric, mode
        self.best: Optional[float] = None
        self.stale = 0  # evaluations in a row without an improvement of at least min_delta
        self.stopped = False

    def update(self, metrics: dict[str, float]) -> bool:
        """Count one evaluation; True once the run should stop (every rank sees the same averaged metrics)."""
        if self.settings is None or self.metric not in metrics:
            return False
        value = metrics[self.metric]
        if self._improves(value):
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        self.stopped = self.stale >= self.settings.patience
        return self.stopped

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        margin = self.settings.min_delta
        return value < self.best - margin if self.mode == "min" else value > self.best + margin

    def state_dict(self) -> dict:
        return {"best": self.best, "stale": self.stale, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.stale, self.stopped = state["best"], state["stale"], state["stopped"]
