"""Where an attempt's start-up time goes, phase by phase, for the log and MLflow (`perf/startup/<phase>_seconds`):
what a restart after preemption costs, and what to make faster."""

from __future__ import annotations

import time

import psutil


class StartupClock:
    """Laps from the process's start: `imports` (interpreter, torch, DeepSpeed, up to the trainer), then each
    phase the trainer names with `lap` (store and settings, model, engine, tracking, restore, first step)."""

    def __init__(self):
        self.phases = {"imports": max(0.0, time.time() - psutil.Process().create_time())}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = now - self._last
        self._last = now

    def total(self) -> float:
        return sum(self.phases.values())

    def summary(self) -> str:
        return ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.phases.items()) + \
            f"; {self.total():.1f} s in all"

    def metrics(self) -> dict[str, float]:
        return {**{f"perf/startup/{phase}_seconds": seconds for phase, seconds in self.phases.items()},
                "perf/startup/total_seconds": self.total()}
