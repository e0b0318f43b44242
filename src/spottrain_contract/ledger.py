"""The preemption ledger: what each attempt of a run did and what preemption cost, kept with the run's
checkpoints (`<run id>/ledger/attempt-NNNN.json`, one file per attempt, written by its rank 0).

An attempt records when it started, the step it resumed from, the ranks and device it had, its start-up time, and,
as it trains, the last step it finished (a heartbeat at every logged step and every save). It ends `finished`,
`preempted` (checkpointed on a notice), `stopped` (checkpointed because a person stopped the run: no preemption)
or `failed`; an attempt that ended without a word and was followed by another, or was the last of a run that has
ended, was `killed` (the spot VM vanished; a stop or cancel that came before any restart ended the run). From
these:

    computed    steps an attempt trained                      last_step − start_step
    recomputed  steps the next attempt had to train again     last_step − next.start_step (if positive)
    useful      the run's progress                            the last attempt's last_step
    goodput     useful ÷ computed                              (computed = useful + recomputed)

Device-hours are wall time × ranks (GPU-hours on GPUs); lost hours are every restart's start-up (but a resume's
after a stop: a person's choice, not preemption's cost) plus the time of the steps the next attempt recomputed (at
the attempt's mean step time after its start-up). A killed attempt's last heartbeat may trail the step it died in
by up to `log_every_steps`: those steps are lost but not counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

from spottrain_contract import layout
from spottrain_contract.store import CheckpointStore

RUNNING, FINISHED, PREEMPTED, FAILED, KILLED = "running", "finished", "preempted", "failed", "killed"
STOPPED = "stopped"  # a person stopped the run (the supervisor said so before the SIGTERM): not a preemption


@dataclass
class Attempt:
    number: int  # 1, 2, … in launch order
    started: float  # unix time
    start_step: int  # the step it resumed from (0: a fresh run)
    world_size: int
    device: str  # the accelerator's name, or "cpu"
    gpus: int  # GPUs it held (0 on CPU)
    last_step: int = 0  # the last step it finished, as of `last_seen`
    last_seen: float = 0.0
    ended: Optional[float] = None
    cause: str = RUNNING  # as the attempt said; `killed` is inferred when it said nothing
    startup_seconds: Optional[float] = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @property
    def key_name(self) -> str:
        return f"attempt-{self.number:04d}.json"

    @property
    def computed(self) -> int:
        return max(0, self.last_step - self.start_step)

    @property
    def wall_seconds(self) -> float:
        return max(0.0, (self.ended or self.last_seen) - self.started)


@dataclass
class AttemptView:
    """An attempt as the ledger reads it, with what follows from the next one."""

    attempt: Attempt
    cause: str
    recomputed: int
    lost_seconds: float


@dataclass
class Ledger:
    attempts: list[AttemptView] = field(default_factory=list)

    @property
    def useful(self) -> int:
        return self.attempts[-1].attempt.last_step if self.attempts else 0

    @property
    def computed(self) -> int:
        return sum(view.attempt.computed for view in self.attempts)

    @property
    def recomputed(self) -> int:
        return sum(view.recomputed for view in self.attempts)

    @property
    def goodput(self) -> float:
        return self.useful / self.computed if self.computed else 1.0

    def count(self, cause: str) -> int:
        return sum(view.cause == cause for view in self.attempts)

    @property
    def device_hours(self) -> float:
        return sum(v.attempt.wall_seconds * v.attempt.world_size for v in self.attempts) / 3600

    @property
    def device_hours_lost(self) -> float:
        return sum(v.lost_seconds * v.attempt.world_size for v in self.attempts) / 3600

    def totals(self) -> dict[str, float]:
        """What MLflow gets as `ledger/*` metrics and `launch status RUN` prints under the table."""
        return {"attempts": len(self.attempts), "preemptions": self.count(PREEMPTED) + self.count(KILLED),
                "stopped": self.count(STOPPED),
                "steps_useful": self.useful, "steps_computed": self.computed, "steps_recomputed": self.recomputed,
                "goodput": self.goodput, "device_hours": self.device_hours,
                "device_hours_lost": self.device_hours_lost}


def prefix(run_id: str) -> str:
    return f"{run_id}/{layout.LEDGER}/"


def read_attempts(store: CheckpointStore, run_id: str) -> list[Attempt]:
    attempts = []
    for key in sorted(store.list(prefix(run_id))):
        data = store.get_bytes(key)
        if data:
            attempts.append(Attempt(**json.loads(data)))
    return sorted(attempts, key=lambda a: a.number)


def ledger_of(attempts: list[Attempt], *, run_ended: bool = False) -> Ledger:
    """The ledger of these attempts; `run_ended`: the run is over (as its launcher knows), so an attempt that said
    nothing, even the last, is not running."""
    views = []
    for attempt, following in zip(attempts, [*attempts[1:], None]):
        cause = attempt.cause
        if cause == RUNNING and (following is not None or run_ended):
            cause = KILLED
        recomputed = max(0, attempt.last_step - following.start_step) if following is not None else 0
        startup = attempt.startup_seconds or 0.0
        per_step = max(0.0, attempt.wall_seconds - startup) / attempt.computed if attempt.computed else 0.0
        # the first attempt's start-up is the run's, and a resume's after a stop the person's: not preemption's
        restart = startup if views and views[-1].cause != STOPPED else 0.0
        lost = restart + recomputed * per_step
        views.append(AttemptView(attempt, cause, recomputed, lost))
    return Ledger(views)


def read_ledger(store: CheckpointStore, run_id: str, *, run_ended: bool = False) -> Ledger:
    return ledger_of(read_attempts(store, run_id), run_ended=run_ended)
