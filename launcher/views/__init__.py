"""What the CLI shows, as data: `--json` prints these models, the tables are drawn from them, and the hub's JSON
API is to return the same ones (one schema for scripts and pages)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field

from spottrain_contract.job import RunState


class RecipeView(BaseModel):
    name: str = Field(description="Recipe name (recipes/NAME.yaml).")
    task: Optional[str] = Field(None, description="What the stage trains; None when the recipe is invalid.")
    gpus: Optional[int] = Field(None, description="GPUs per node, the preferred count.")
    nodes: Optional[int] = None
    spot: Optional[bool] = None
    accelerator: Optional[str] = Field(None, description="The preferred GPU type.")
    capacity: list[str] = Field(default_factory=list, description="`TYPE:GPUS` a platform may provision, in order "
                                                                  "of preference.")
    targets: list[str] = Field(default_factory=list, description="Platforms it renders for as written.")
    profiles: list[str] = Field(default_factory=list)
    error: Optional[str] = Field(None, description="Why the recipe does not load, if it does not.")


class CostView(BaseModel):
    """What a run cost in dollars: its ledger's device-hours at the price of one of its nodes (launcher.pricing)."""

    dollars_used: Optional[float] = Field(None, description="Every attempt's device-hours at the price; None: no "
                                                            "price known (never 0).")
    dollars_lost: Optional[float] = Field(None, description="What preemption cost of them: the ledger's lost "
                                                            "device-hours (restarts' start-ups, recomputed steps).")
    dollars_per_step: Optional[float] = Field(None, description="dollars_used ÷ the run's useful steps.")
    price_per_hour: Optional[float] = Field(None, description="Dollars an hour of one node as the recipe asks for it "
                                                              "(accelerator × gpus).")
    source: Optional[str] = Field(None, description="Where the price came from: `skypilot catalog: CLOUD REGION "
                                                    "spot|on-demand INSTANCE_TYPE` or `recipe "
                                                    "resources.price_per_hour`.")
    summary: str = Field(description="In one line, as `launch status RUN` prints it after `cost:`.")


class RunView(BaseModel):
    id: str = Field(description="The run id, stable across restarts.")
    name: str = Field(description="The job name on the platform (the recipe's `name`).")
    recipe: str
    target: str
    state: RunState
    step: Optional[int] = Field(None, description="The trainer's last finished step, where the target reports "
                                                 "progress (None: not known).")
    total_steps: Optional[int] = Field(None, description="The steps the run trains in all, with `step`.")
    restarts: int
    started: float = Field(description="Launch time, seconds since the epoch.")
    ended: Optional[float] = None
    overrides: list[str] = Field(default_factory=list, description="The launch's dotted overrides.")
    failure: Optional[str] = Field(None, description="Why a failed run failed, one line.")
    sweep_id: Optional[str] = Field(None, description="The sweep this run is a cell of, if any.")
    cell: Optional[str] = Field(None, description="Its cell's name (entries joined by `__`), if any.")
    task: Optional[str] = Field(None, description="What its recipe trains (None: recorded before it was kept).")
    launched_by: Optional[str] = Field(None, description="`user@host` that launched it (or saved the draft).")
    project: str = Field("", description="The name of the project directory it was launched from.")
    job_of: Optional[str] = Field(None, description="An eval or predict job: the run whose weights it uses (the lists "
                                                    "show it under that run; it is neither resumed nor cloned).")
    job: Optional[str] = Field(None, description="What such a job does: eval or predict.")
    goodput: Optional[float] = Field(None, description="The preemption ledger's goodput (useful ÷ computed "
                                                       "steps) as last read; None: never read.")
    device_hours: Optional[float] = Field(None, description="The ledger's device-hours as last read.")
    device_unit: Optional[str] = Field(None, description="What device_hours count: `GPU` or `rank` (on CPU).")
    cost: Optional[CostView] = Field(None, description="Dollars used and lost to preemption, where the run's ledger "
                                                       "was read for this view (`launch status RUN`); None in lists.")


    @property
    def progress(self) -> str:
        """`12/40` for people, `-` where the step is not known."""
        return "-" if self.step is None else f"{self.step}/{self.total_steps}"


class SweepView(BaseModel):
    """A sweep as `launch status` shows it above its cells (and the hub's Runs page, as data)."""

    sweep_id: str
    recipe: str
    task: Optional[str] = None
    target: str
    state: RunState = Field(description="The liveliest of its cells' states (see launcher/sweeps/status.py).")
    finished: int = Field(description="Cells finished.")
    cells: list[str] = Field(description="Its launched cells' run ids, in launch order.")
    states: dict[str, int] = Field(description="How many of its cells are in each state.")
    restarts: int = Field(description="Its cells' restarts, summed.")
    started: float = Field(description="When its first cell was launched.")
    launched_by: list[str] = Field(default_factory=list, description="Who launched its cells.")
    device_hours: Optional[float] = Field(None, description="Its cells' device-hours as last read, summed (None: "
                                                            "none read, or cells counting different units).")
    device_unit: Optional[str] = None


# --- a sweep a search explores (`launch sweep status SWEEP`, the hub's sweep page) ---------------------------

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


class CompareView(BaseModel):
    runs: list[str]
    config_diff: dict[str, list[Optional[str]]] = Field(
        description="Each parameter that differs: its value in each run (None where a run lacks it).")
    metrics: dict[str, list[Optional[float]]] = Field(description="Each metric's final value in each run.")


class AblationCell(BaseModel):
    cell: str = Field(description="The cell's name: its entries' names joined by `__`.")
    run_id: str
    mlflow_run_id: Optional[str] = Field(None, description="Its MLflow run (None: nothing logged yet).")
    entries: dict[str, str] = Field(description="Axis -> the entry this cell takes, in axis order.")
    overrides: dict[str, Any] = Field(description="The dotted settings its entries change.")
    metrics: dict[str, Optional[float]] = Field(description="Each column's final value (None: not logged).")


class AblationView(BaseModel):
    """`launch compare SWEEP` and its `ablation_summary.json`."""

    sweep_id: str
    recipe: str
    metrics: list[str] = Field(description="The columns: MLflow metric keys (the evaluation metrics, train/loss), "
                                           "then gpu_hours (the ledger's device-hours: GPU-hours on GPUs, "
                                           "rank-hours on CPU), then dollars where a cell's price is known "
                                           "(launcher.pricing).")
    cells: list[AblationCell]


class PlanView(BaseModel):
    recipe: str
    file: str
    profile: Optional[str] = None
    target: str
    run_id: str
    task: str
    accelerator: str = Field(description="The preferred GPU type.")
    gpus: int = Field(description="GPUs per node, the preferred count.")
    capacity: list[str] = Field(description="`TYPE:GPUS` a platform may provision, in order of preference.")
    nodes: int
    spot: bool
    effective_batch: Optional[int]  # None: a command recipe's script owns its batch
    max_steps: Optional[int] = None
    epochs: Optional[float]
    store: str
    overrides: list[str]
    changes: list[str] = Field(default_factory=list, description="Settings a resume changes (--allow-changes).")
    sweep_id: Optional[str] = Field(None, description="A sweep's cell: the sweep.")
    cell: Optional[str] = Field(None, description="A sweep's cell: its name.")
    cell_overrides: dict[str, Any] = Field(default_factory=dict, description="What the cell's entries set.")
    summary: str = Field("", description="What a person checks before renting GPUs, as `launch recipe` prints it.")
    document: str = Field(description="Exactly what the target receives, secrets masked.")


class SweepPlanView(BaseModel):
    """`launch recipe SWEEP_RECIPE --dry-run --json`: the sweep and each cell's plan."""

    sweep_id: str
    recipe: str
    target: str
    cells: list[PlanView] = Field(description="One per cell, in grid order (the first axis varying slowest).")


class HubRunView(RunView):
    """A run as the hub's API returns it: `launch status --json`'s row plus what the hub shows beside it."""

    overrides: dict[str, Any] = Field(default_factory=dict, description="The launch's (or draft's) overrides as "
                                      "`{dotted key: value}`, the shape `POST /api/runs` takes.")
    profile: Optional[str] = Field(None, description="The recipe profile a draft or hub launch applies.")
    loss: Optional[float] = Field(None, description="The latest train/loss logged to MLflow, if any yet.")
    log: bool = Field(False, description="Whether the run has a log here (runs on this machine).")


class AttemptRow(BaseModel):
    """One attempt of a run, a row of `launch status RUN`'s ledger table."""

    number: int
    started: float = Field(description="Seconds since the epoch.")
    wall_seconds: float
    ended_as: str = Field(description="finished, preempted, stopped (by a person), failed, running, or killed (it "
                                      "ended without a word and another attempt followed: the spot VM vanished).")
    ranks: int
    device: str = Field(description="The accelerator's name, or `cpu`.")
    gpus: int
    start_step: int = Field(description="The step it resumed from (0: a fresh run).")
    last_step: int = Field(description="The last step it finished, as of its last heartbeat.")
    computed: int = Field(description="Steps it trained.")
    recomputed: int = Field(description="Steps of it the next attempt trained again.")
    startup_seconds: Optional[float] = Field(None, description="From its start to its first step.")


class LedgerView(BaseModel):
    """A run's preemption ledger (`spottrain_contract.ledger`): the attempts and the totals line under them."""

    attempts: list[AttemptRow]
    preemptions: int = Field(description="Attempts preempted or killed.")
    goodput: float = Field(description="useful ÷ computed steps.")
    useful: int = Field(description="The run's progress: the last attempt's last step.")
    computed: int
    recomputed: int
    device_hours: float = Field(description="Wall time × ranks of every attempt.")
    device_hours_lost: float = Field(description="Restarts' start-ups plus the recomputed steps' time, × ranks.")
    hours: str = Field(description="What the device-hours count: `GPU-hours` on GPUs, `rank-hours` on CPU.")
    summary: str = Field(description="The totals in one line, as `launch status RUN` prints them (empty: no "
                                     "attempt yet).")
    cost: Optional[CostView] = Field(None, description="What the attempts cost in dollars (None: no attempt yet).")


class CheckpointView(BaseModel):
    step: int
    bytes: Optional[int] = Field(None, description="Its files' sizes as its manifest lists them (None: incomplete).")
    complete: bool = Field(description="Its manifest is written: a resume or `launch eval` may take it.")
    best: bool = Field(description="BEST.json names it: the best evaluation so far (what a later stage starts from).")
    final: bool = Field(description="The run's final checkpoint, the one final-hf/ is exported from.")


class CheckpointsView(BaseModel):
    """A run's checkpoints in its store, oldest first, and its final export."""

    checkpoints: list[CheckpointView]
    export_files: int = Field(0, description="Files under final-hf/ (the final weights); 0 before the export.")
    completed: bool = Field(False, description="COMPLETE.json is written: export published, metrics sent.")
