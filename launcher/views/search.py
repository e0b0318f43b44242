"""A sweep that a search explores, as data: `launch sweep status SWEEP [--json]` and the hub's sweep page draw
from these (one schema for scripts and pages)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

from launcher.views import CostView
from spottrain_contract.job import RunState


class JudgementView(BaseModel):
    """One decision about a cell at one rung (median: at the evaluation it was judged at)."""

    rung: int
    budget: float = Field(description="Where it was judged, in the budget's unit (a rung's budget).")
    value: Optional[float] = Field(None, description="The metric it was judged with.")
    verdict: str = Field(description="promoted (goes on) or pruned.")
    decided: float = Field(description="When the controller decided, seconds since the epoch.")
    latency_seconds: Optional[float] = Field(None, description="From the value being logged to the pruned cell's "
                                                               "stop being handed to its target.")


class SearchCellView(BaseModel):
    cell: str
    run_id: Optional[str] = Field(None, description="None: not launched yet.")
    state: Optional[RunState] = None
    step: Optional[int] = None
    total_steps: Optional[int] = None
    overrides: dict = Field(default_factory=dict, description="What the cell sets, as dotted keys.")
    metric: Optional[float] = Field(None, description="Its metric's last value.")
    points: list[list[float]] = Field(default_factory=list, description="[budget, metric] at each evaluation.")
    judgements: list[JudgementView] = Field(default_factory=list)
    steps_computed: Optional[int] = Field(None, description="Steps its attempts computed (the ledger's).")
    device_hours: Optional[float] = None
    device_unit: Optional[str] = Field(None, description="What its device-hours count: GPU, or rank (on CPU).")
    cost: Optional[CostView] = None
    dollars_not_spent: Optional[float] = Field(None, description="A pruned cell: the steps it did not train, at its "
                                                                 "dollars per step.")


class SearchSweepView(BaseModel):
    sweep_id: str
    recipe: str
    target: str
    method: str
    metric: str
    mode: str
    budget: str = Field(description="The dotted key that grows (train.max_steps, train.epochs, ...).")
    full_budget: Optional[float] = None
    rungs: list[float] = Field(default_factory=list, description="Where cells are judged (asha, hyperband).")
    state: str = Field(description="running, stopping, stopped or finished.")
    controller: Optional[str] = Field(None, description="`host:pid` of the controller holding it.")
    controller_alive: bool = False
    cells: list[SearchCellView]
    best: Optional[str] = Field(None, description="The best cell by its last metric value among those that "
                                                  "finished (else among all).")
    steps_computed: int = Field(0, description="Steps every cell's attempts computed.")
    steps_full_grid: Optional[int] = Field(None, description="What training every cell to the end would take.")
    device_hours: Optional[float] = None
    device_unit: Optional[str] = None
    dollars_spent: Optional[float] = Field(None, description="Its cells' dollars (None: no price known).")
    dollars_not_spent: Optional[float] = Field(None, description="What its pruned cells did not spend.")
