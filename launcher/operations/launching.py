"""Plan, launch and resume: a request is planned once (the recipe loaded and validated once per run), rendered
for display (secrets masked), then submitted as separate steps; the CLI and the hub both go through here, so a
rule about what a launch or a resume takes (the default profile, a resume's settings) is written once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from launcher import runner
from launcher.display import masked_document
from launcher.errors import LaunchError
from launcher.operations.workspace import Workspace
from launcher.plan import LaunchPlan, code_version, effective_profile, override_text, plan_launch
from launcher.requests import DEFAULT_TARGET, DependencyLookup, LaunchRequest
from launcher.rundb.records import RunRecord, WeightsJobOf
from launcher.stages import pipeline_stages, with_stage_inputs
from launcher.sweeps import cells as sweeps
from launcher.sweeps.parent import describe_parent
from launcher.targets import Handle, get_target
from launcher.targets.local.supervisor import Chaos
from launcher.views import PlanView, SweepPlanView
from launcher.views.console import for_console
from spottrain_contract.command import CommandRecipe
from spottrain_contract.job import RunState
from spottrain_contract.recipe import LoadedRecipe, capacity_changes, load_recipe, setting_changes
from spottrain_contract.search import Search


class DraftEntry(BaseModel):
    """What the hub's form asked of a run (a draft's settings, the name the Runs page shows), kept in the run's
    record beside its target's handle, under `hub`."""

    model_config = ConfigDict(extra="ignore")
    KEY: ClassVar[str] = "hub"

    recipe: str
    target: Optional[str] = None  # a draft's (a launched run's is its record's)
    profile: Optional[str] = None
    overrides: dict[str, Any] = Field(default_factory=dict)  # {dotted key: value}, as the form posted them
    name: str = ""

    @classmethod
    def of(cls, record) -> Optional["DraftEntry"]:
        kept = record.handle.get(cls.KEY)
        return cls.model_validate(kept) if kept else None

    def entries(self) -> dict:
        return {self.KEY: self.model_dump()}


@dataclass(frozen=True)
class Planned:
    """One run planned: the plan and the exact document its target would receive, secrets masked."""

    plan: LaunchPlan
    document: str

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    @property
    def target(self) -> str:
        return self.plan.target

    @property
    def runs_here(self) -> bool:
        return get_target(self.plan.target).RUNS_HERE

    @property
    def summary(self) -> str:
        return self.plan.summary(get_target(self.plan.target).describe(self.plan.recipe), secrets=not self.runs_here)

    def view(self) -> PlanView:
        plan, r, cell = self.plan, self.plan.recipe, self.plan.loaded.cell
        return PlanView(recipe=plan.loaded.name, file=plan.loaded.relpath, profile=plan.loaded.profile,
                        target=plan.target, run_id=plan.run_id, task=r.task, accelerator=r.resources.accelerators[0],
                        gpus=r.resources.preferred_gpus, capacity=r.resources.candidates, nodes=r.resources.nodes,
                        spot=r.resources.spot, effective_batch=r.effective_batch, max_steps=r.train.max_steps,
                        epochs=r.train.epochs, store=r.train.checkpoint.uri, overrides=list(plan.loaded.overrides),
                        changes=list(plan.loaded.changes), sweep_id=plan.sweep_id, cell=cell.name if cell else None,
                        cell_overrides=cell.overrides if cell else {}, summary=self.summary,
                        document=self.document)


@dataclass(frozen=True)
class PlannedSweep:
    """A sweep recipe planned: every cell planned and rendered before anything starts."""

    sweep: sweeps.SweepPlan
    cells: tuple[Planned, ...]
    max_parallel: Optional[int]
    parent: str  # the dry run's line saying where the cells' MLflow parent run will be

    @property
    def runs_here(self) -> bool:
        return get_target(self.sweep.target).RUNS_HERE

    @property
    def search(self) -> Optional[Search]:
        return self.sweep.loaded.recipe.search

    @property
    def controlled(self) -> bool:
        """Whether a controller explores it (a search that prunes): the launch records it and returns."""
        return self.search is not None and self.search.prunes

    @property
    def pace(self) -> str:
        if self.controlled:
            most = self.max_parallel or self.search.max_parallel
            return (f"at most {most} at once" if most else "one at a time" if self.runs_here else "all at once")
        if self.runs_here:
            return "one after another"
        return f"at most {self.max_parallel} at once" if self.max_parallel else "all at once"

    def cell_rows(self) -> list[tuple[str, str, list[str]]]:
        """Each cell's name, run id and what it sets, as `--override` takes it."""
        return [(plan.loaded.cell.name, plan.run_id,
                 [override_text(key, value) for key, value in plan.loaded.cell.overrides.items()])
                for plan in self.sweep.cells]

    def view(self) -> SweepPlanView:
        return SweepPlanView(sweep_id=self.sweep.sweep_id, recipe=self.sweep.loaded.name, target=self.sweep.target,
                             cells=[cell.view() for cell in self.cells])


@dataclass(frozen=True)
class Submitted:
    """A run handed to its target, or found finished before (then nothing was submitted)."""

    run_id: str
    target: str
    recipe: str
    runs_here: bool
    finished_at: Optional[int] = None  # it had already finished at this step: nothing submitted
    where: Optional[str] = None  # the platform's handle for people: a URL, a managed job id
    log: Optional[str] = None
    store: str = ""
    tracking_uri: str = ""
    exports_final: bool = True  # its final weights go to final-hf/ (a command recipe's script keeps its own)


@dataclass(frozen=True)
class Outcome:
    """Where a followed run ended."""

    run_id: str
    state: RunState
    step: str  # `12/40`, `-` where not known
    failure: Optional[str]


def prepare(ws: Workspace, request: LaunchRequest,
            lookup: DependencyLookup = DependencyLookup.REQUIRE) -> Union[Planned, PlannedSweep]:
    """Plan and render `request`: one run (a new one, or the next attempt of `request.run_id`), or each cell of a
    sweep recipe. Nothing is submitted; a bad request is a one-line error before anything starts."""
    if request.chaos:
        Chaos.parse(request.chaos)  # a bad spec is a one-line error before anything is rendered
    if request.run_id is None and request.cell is None:
        request = with_target(request, None)  # a new run: no record to ask
        bare = load_recipe(request.recipe, project_dir=ws.project_dir, profile=effective_profile(request),
                           overrides=request.sized())
        if bare.recipe.sweep or (bare.recipe.search is not None and bare.recipe.search.trials):
            return _prepare_sweep(ws, request, bare, lookup)
        _refuse_sweep_options(request)
        return plan_run(ws, request, lookup, loaded=bare)
    _refuse_sweep_options(request)
    return plan_run(ws, request, lookup)


def plan_run(ws: Workspace, request: LaunchRequest, lookup: DependencyLookup,
             loaded: Optional[LoadedRecipe] = None) -> Planned:
    """One run: a resume of a run this project launched takes the settings it was launched with unless the
    request asks for others, and refuses settings that differ from them unless `allow_changes`. `loaded`: the
    request's recipe where the caller loaded it already (a new run's)."""
    earlier = ws.registry.get(request.run_id) if request.run_id and ws.registry.exists(request.run_id) else None
    request = with_target(request, earlier)
    launched = runner.launched_recipe(earlier)
    if launched is not None:
        request = _as_resume(request, earlier, launched)
    plan = plan_launch(request, ws.project_dir, code=code_version(ws.project_dir), loaded=loaded)
    if lookup is not DependencyLookup.SKIP:
        plan = with_stage_inputs(plan, ws.project_dir, required=lookup is DependencyLookup.REQUIRE,
                                 after=dict(request.after))
    if launched is not None:
        plan = _checked_resume(plan, launched, request.allow_changes)
    return Planned(plan, masked_document(plan))


def submit(ws: Workspace, planned: Planned) -> Submitted:
    """Hand one planned run to its target (a run here that finished before is not started again)."""
    plan = planned.plan
    exports_final = not isinstance(plan.recipe, CommandRecipe)
    done = runner.completed_here(plan, ws.project_dir)
    if done is not None:
        return Submitted(plan.run_id, plan.target, plan.loaded.name, planned.runs_here, finished_at=done,
                         exports_final=exports_final)
    record = runner.submit(ws.registry, plan)
    where = get_target(record.target).HANDLE.of(record).where()
    return Submitted(record.run_id, record.target, record.recipe, planned.runs_here, where=where, log=record.log,
                     store=record.store, tracking_uri=record.tracking_uri, exports_final=exports_final)


def follow(ws: Workspace, run_id: str) -> Iterator[str]:
    """A run's log as it is written, until the run ends, less third-party noise."""
    return for_console(runner.logs(ws.registry.get(run_id), follow=True))


def outcome(ws: Workspace, run_id: str) -> Outcome:
    record = ws.registry.get(run_id)
    final = runner.refresh(ws.registry, record)
    failure = Handle.of(record).failure if final.state is RunState.FAILED else None
    return Outcome(run_id, final.state, final.progress, failure)


def launch_sweep(ws: Workspace, planned: PlannedSweep, *, submit_cell: Callable[[Planned], Optional[RunState]],
                 say: Callable[[str], None]) -> dict[str, Optional[RunState]]:
    """Each cell in grid order (finished cells skipped, unfinished ones resumed) through `submit_cell`, which
    returns the cell's final state when it follows it here, None when it goes on without it (a platform)."""
    if planned.controlled:
        raise LaunchError(f"sweep {planned.sweep.sweep_id}: its search ({planned.search.method}) is explored by a "
                          f"controller (operations.start_search), not cell after cell")
    if planned.runs_here and planned.max_parallel:
        raise LaunchError("--max-parallel: a sweep's cells run here one after another, in the foreground (Ctrl-C "
                          "stops the cell that runs, and the sweep)")
    by_run = {cell.run_id: cell for cell in planned.cells}
    return sweeps.launch_sweep(planned.sweep, ws.registry, max_parallel=planned.max_parallel, say=say,
                               submit=lambda plan: submit_cell(dataclasses.replace(by_run[plan.run_id], plan=plan)))


def resume(ws: Workspace, run_id: str) -> Submitted:
    """A stopped or failed run's next attempt, as `launch recipe RECIPE --run-id RUN` makes it (the settings it was
    launched with, on its target), in the background; the trainer resumes from its newest complete checkpoint."""
    record = ws.registry.get(run_id)
    refuse_a_weights_job(record, "resumed")
    if record.state not in (RunState.STOPPED, RunState.FAILED, RunState.PRUNED):
        raise LaunchError(f"run {run_id} is {record.state}: only a stopped, pruned or failed run resumes")
    home = ws.of_run(record.project)
    launched = runner.launched_recipe(record)
    if launched is None:
        raise LaunchError(f"run {run_id}: its launch kept no recipe to resume")
    planned = plan_run(home, LaunchRequest(launched.name, record.target, run_id=run_id), DependencyLookup.REQUIRE)
    done = runner.completed_here(planned.plan, home.project_dir)
    if done is not None:
        raise LaunchError(f"run {run_id} already finished at step {done}: nothing to resume")
    submitted = submit(home, planned)
    keep_draft_entry(home, run_id, DraftEntry.of(record))
    return submitted


def refuse_a_weights_job(record, done: str) -> None:
    """An eval or predict job is launched again by its command, on the run whose weights it used."""
    job = WeightsJobOf.of(record)
    if job is not None:
        article = "an" if job.kind.value[0] in "aeiou" else "a"
        raise LaunchError(f"run {record.run_id} is {article} {job.kind.value} job of run {job.run_id}: it is not "
                          f"{done}; run `launch {job.kind.value} {job.run_id}` again")


def keep_draft_entry(ws: Workspace, run_id: str, entry: Optional[DraftEntry]) -> None:
    """A submission writes the run's record afresh: what the hub's form asked (its name, its overrides as a
    mapping) goes back into its handle."""
    if entry is not None:
        ws.registry.update(run_id, handle=entry.entries())


def pipeline_requests(ws: Workspace, name: str, request: LaunchRequest) -> list[LaunchRequest]:
    """The requests of pipeline `name`'s stages, in launch order (each stage's `after` is filled in as the pipeline
    goes: see `launch_stage`)."""
    return [request.but(recipe=stage) for stage in pipeline_stages(ws.project_dir, name)]


def launch_stage(ws: Workspace, request: LaunchRequest, before: dict[str, str]) -> Planned:
    """A pipeline's stage planned after the stages `before` (recipe → run id), whose runs it may take inputs of."""
    return plan_run(ws, request.but(after=tuple(before.items())), DependencyLookup.REQUIRE)


def confirm_needed(target: str) -> bool:
    """Whether launching on `target` spends money (a platform): the faces ask before they submit."""
    return not get_target(target).RUNS_HERE


def with_target(request: LaunchRequest, earlier: Optional[RunRecord]) -> LaunchRequest:
    """The request with its target settled: the one asked for, else the one the run's `earlier` record names (so a
    hint like `launch recipe R --run-id RUN` continues the run where it ran, never on a paid platform it never
    used), else DEFAULT_TARGET."""
    if request.target is not None:
        return request
    return request.but(target=earlier.target if earlier is not None else DEFAULT_TARGET)


def _refuse_sweep_options(request: LaunchRequest) -> None:
    if request.cell is None and (request.sweep_id or request.max_parallel):
        flag = "sweep-id" if request.sweep_id else "max-parallel"
        raise LaunchError(f"--{flag}: only for a recipe with a sweep, launched without --run-id")


def _prepare_sweep(ws: Workspace, request: LaunchRequest, bare: LoadedRecipe,
                   lookup: DependencyLookup) -> PlannedSweep:
    sweep = sweeps.plan_sweep(request, bare)
    cells = tuple(plan_run(ws, cell, lookup) for cell in sweeps.cell_requests(sweep, request))
    sweep = dataclasses.replace(sweep, cells=tuple(c.plan for c in cells))
    return PlannedSweep(sweep, cells, request.max_parallel,
                        describe_parent(sweep, ws.project_dir) if cells else "")


def _as_resume(request: LaunchRequest, record: RunRecord, launched: LoadedRecipe) -> LaunchRequest:
    """A plain resume continues as launched (profile, overrides, its sweep cell); one that asks for settings
    keeps the launch's profile unless it names another."""
    if not request.asks_for_settings:
        request = request.but(profile=launched.profile, overrides=(*launched.overrides, *_capacity(request, launched)),
                              gpus=None, nodes=None)
    elif not request.profile:
        request = request.but(profile=launched.profile)
    return request.but(cell=launched.cell or request.cell,
                       sweep_id=record.sweep_id or request.sweep_id)


def _capacity(request: LaunchRequest, launched: LoadedRecipe) -> tuple[str, ...]:
    """A resume on other GPUs or nodes (`--gpus`/`--nodes`), as overrides after the launch's own: the capacity,
    and the gradient accumulation that keeps the launch's global batch on it (elastic resume)."""
    if request.gpus is None and request.nodes is None:
        return ()
    recipe = launched.recipe
    if recipe.effective_batch is None:  # a command recipe: the script adapts to the ranks it gets
        return request.sized()
    gpus = request.gpus if request.gpus is not None else recipe.resources.preferred_gpus
    nodes = request.nodes if request.nodes is not None else recipe.resources.nodes
    accum = recipe.grad_accum_on(gpus, nodes)
    if accum is None:
        raise LaunchError(f"--gpus {gpus} --nodes {nodes}: the run's global batch of {recipe.effective_batch} "
                          f"(per_gpu {recipe.train.batch.per_gpu}) cannot be kept on {gpus * nodes} GPUs: resume on "
                          f"a count that divides it, or pass --override train.batch.grad_accum=N --allow-changes")
    return (*request.sized(), f"train.batch.grad_accum={accum}")


def _checked_resume(plan: LaunchPlan, launched: LoadedRecipe, allow_changes: bool) -> LaunchPlan:
    capacity = capacity_changes(launched.recipe, plan.recipe)
    if capacity:
        note = (f"capacity   {'; '.join(capacity)} (since the launch; the global batch of "
                f"{plan.recipe.effective_batch} kept)")
        plan = dataclasses.replace(plan, notes=(*plan.notes, note))
    changes = setting_changes(launched.recipe, plan.recipe)
    if changes and not allow_changes:
        listed = "; ".join(changes)
        raise LaunchError(f"run {plan.run_id} was launched with other settings ({listed}): resume without changing "
                          f"them (`launch recipe {plan.loaded.name} --run-id {plan.run_id}` reuses the launch's "
                          f"overrides), or pass --allow-changes to train on with these")
    return dataclasses.replace(plan, loaded=dataclasses.replace(plan.loaded, changes=tuple(changes)))


__all__ = [
    "DraftEntry", "Outcome", "Planned", "PlannedSweep", "Submitted", "confirm_needed", "follow",
    "keep_draft_entry", "launch_stage", "launch_sweep", "masked_document", "outcome", "pipeline_requests",
    "plan_run", "prepare", "resume", "submit",
]
