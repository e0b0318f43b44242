"""A run as the run database keeps it: one `RunRecord` per row of `runs` (`store.row_values` and
`Registry` convert), with its cached ledger summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from launcher.requests import JobKind
from spottrain_contract.job import RunState


@dataclass(frozen=True)
class LedgerSummary:
    """A run's preemption ledger as the run lists show it, kept in its row: reading every run's ledger from its
    store at every refresh of a list would be too slow. Refreshed whenever the launcher reads the ledger anyway
    (`launcher.views.ledger.run_ledger`); stale by whatever the run did since `read`."""

    goodput: float  # useful ÷ computed steps
    device_hours: float  # wall time × ranks of every attempt
    device_unit: str  # what device_hours count: "GPU" (GPU-hours) or "rank" (rank-hours, on CPU)
    read: float  # when it was read (seconds since the epoch)


@dataclass
class RunRecord:
    run_id: str
    recipe: str
    target: str
    state: RunState
    started: float
    store: str
    local_dir: str
    tracking_uri: str
    handle: dict = field(default_factory=dict)
    restarts: int = 0
    ended: Optional[float] = None
    log: Optional[str] = None
    project: str = ""  # the project directory it was launched from (its registry, its working copy)
    recipe_document: str = ""  # the resolved recipe the latest launch shipped: a resume reuses it
    sweep_id: Optional[str] = None  # a sweep's cell: the sweep (`launch status SWEEP`, `launch compare SWEEP`)
    cell: Optional[str] = None  # a sweep's cell: its name
    launched_by: Optional[str] = None  # `user@host` of whoever launched it (or saved the draft); None: unknown
    task: Optional[str] = None  # what its recipe trains (the recipe's `task`)
    ledger: Optional[LedgerSummary] = None  # a cache only `Registry.cache_ledger` writes (`save` keeps it)


def record_from_fields(fields) -> RunRecord:
    return RunRecord(**{**fields, "state": RunState(fields["state"])})


class WeightsJobOf(BaseModel):
    """A record that is a job on another run's weights (`launch eval`/`predict RUN`), kept in its handle under
    `job`: the lists show it under that run, and it is neither resumed nor cloned."""

    model_config = ConfigDict(extra="ignore")
    KEY: ClassVar[str] = "job"

    kind: JobKind
    run_id: str  # the run whose weights it uses

    @classmethod
    def of(cls, record: RunRecord) -> Optional["WeightsJobOf"]:
        kept = record.handle.get(cls.KEY)
        return cls.model_validate(kept) if kept else None

    def entries(self) -> dict:
        return {self.KEY: self.model_dump(mode="json")}
