"""One path from a plan to a run on any target, and the run's life afterwards, over the run registry.

`launch recipe` and `launch pipeline` submit through `submit`; `launch status`, `logs` and `stop` go through
`refresh`, `logs` and `stop`. A target renders, submits and talks to its platform; the runner creates the run
record, writes the registry, and resolves the real secrets only here, for the render that is submitted (the
display render only ever sees masks).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Iterator, Optional

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.registry import Registry, RunRecord, live_message, this_user
from launcher.rundb.records import WeightsJobOf
from launcher.run_store import run_store
from launcher.secrets import resolve_secrets
from launcher.targets import Handle, RunStatus, get_target
from launcher.views import RunView
from spottrain_contract import layout
from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState, mlflow_tracking_uri
from spottrain_contract.lookup import StoredRun
from spottrain_contract.recipe import LoadedRecipe, from_shipped
from spottrain_contract.schema import Recipe
from spottrain_contract.store import open_store


def submit(registry: Registry, plan: LaunchPlan) -> RunRecord:
    """Render with the real secrets, validate, record the run, hand it to its target. A refused submission
    leaves the registry as it was (no record, or the run's record from its earlier launch). The run belongs to
    the registry's project."""
    target = get_target(plan.target)
    if plan.chaos and not target.RUNS_HERE:
        raise LaunchError(f"--chaos: only for runs on this machine, not --target {plan.target}")
    project_dir = registry.project_dir
    _refuse_a_second_live_attempt(registry, plan.run_id)
    secrets = resolve_secrets(target.secret_names(plan.recipe), project_dir, required=not target.RUNS_HERE)
    document = target.render(plan, secrets)
    target.validate(document)
    earlier = registry.get(plan.run_id) if registry.exists(plan.run_id) else None
    if earlier is not None and earlier.store and not target.RUNS_HERE:
        _stop_request(earlier, ask=False)  # a new attempt: an earlier stop's request is answered
    record = _new_record(plan, target, project_dir, registry)
    token = registry.claim_attempt(record, new=earlier is None)  # saves it; a concurrent launch of the id loses
    try:
        handle = target.launch(plan, document, secrets, record)
    except BaseException:
        registry.save(earlier) if earlier else registry.delete(record.run_id)
        registry.release_attempt(record.run_id, token)
        raise
    launched = registry.update(record.run_id, handle=handle.entries())
    registry.attempt_launched(record.run_id, token)
    return launched


def _refuse_a_second_live_attempt(registry: Registry, run_id: str) -> None:
    """One live attempt per run id: a run this project launched is asked of its target (its supervisor, or the
    platform's job queue) before another attempt of it starts, so a stale record (its supervisor died) is
    corrected to terminal first and blocks nothing. This check gives the words; the database's claim
    (`Registry.claim_attempt`, in `submit`) makes two concurrent launches of one run id unable to both pass."""
    if not registry.exists(run_id):
        return
    record = registry.get(run_id)
    if record.state is RunState.DRAFT:  # the hub's draft of this run: launching it is its first attempt
        return
    try:
        now = refresh(registry, record)
    except UserError as exc:
        raise LaunchError(f"run {run_id}: cannot tell whether its last attempt on {record.target} is still live "
                          f"({exc}): try again when {record.target} answers") from None
    if not now.state.is_terminal:
        raise LaunchError(live_message(run_id, record.target, str(now.state), now.progress))


def launched_recipe(record: Optional[RunRecord]) -> Optional[LoadedRecipe]:
    """The recipe the run's latest launch shipped, or None (no record: a new run; a draft)."""
    if record is None or not record.recipe_document:
        return None
    return from_shipped(record.recipe_document, f"run {record.run_id} in the run database")


def completed_here(plan: LaunchPlan, project_dir: Path) -> Optional[int]:
    """For a run on this machine that was completed before: its final step (read from its store here, before
    any worker starts); None otherwise, and for platform runs, whose store may need the node's credentials."""
    if not get_target(plan.target).RUNS_HERE:
        return None
    uri = plan.recipe.train.checkpoint.uri
    store = open_store(uri if "://" in uri else str(project_dir / uri), plan.recipe.train.checkpoint.endpoint_url)
    return StoredRun(store, plan.run_id).completed()


def _new_record(plan: LaunchPlan, target, project_dir: Path, registry: Registry) -> RunRecord:
    """Where the run keeps its checkpoints and metrics; paths of a run here are made absolute (status may be
    asked from anywhere), a platform's are the node's."""
    checkpoint = plan.recipe.train.checkpoint
    store, local_dir = checkpoint.uri, checkpoint.local_dir
    if target.RUNS_HERE:
        local_dir = str(project_dir / local_dir)
        store = store if "://" in store else str(project_dir / store)
    return RunRecord(run_id=plan.run_id, recipe=plan.loaded.name, target=plan.target, state=RunState.LAUNCHING,
                     started=time.time(), store=store, local_dir=local_dir,
                     tracking_uri=tracking_uri(plan, project_dir) or "",
                     log=str(registry.log_path(plan.run_id)) if target.RUNS_HERE else None, project=str(project_dir),
                     recipe_document=plan.loaded.shipped(), sweep_id=plan.sweep_id,
                     cell=plan.loaded.cell.name if plan.loaded.cell else None, launched_by=this_user(),
                     task=plan.recipe.task, handle=plan.job_of.entries() if plan.job_of else {})


def tracking_uri(plan: LaunchPlan, project_dir: Path) -> Optional[str]:
    """Where the run's MLflow run is, as this machine reaches it: a run here logs to the recipe's server or the
    SQLite store beside its checkpoints; a platform's run to the recipe's server (`mlflow.tracking_uri`, or
    MLFLOW_TRACKING_URI in its `env`), else to a store on its node that only the node sees (None)."""
    mlflow = plan.recipe.mlflow
    if get_target(plan.target).RUNS_HERE:
        return mlflow_tracking_uri(mlflow.tracking_uri, str(project_dir / plan.recipe.train.checkpoint.local_dir))
    return server_uri(plan.recipe)


def server_uri(recipe: Recipe) -> Optional[str]:
    """The MLflow server a platform's run of `recipe` logs to: `mlflow.tracking_uri`, or MLFLOW_TRACKING_URI in
    its `env`; None when it names none."""
    return recipe.mlflow.tracking_uri or recipe.env.get("MLFLOW_TRACKING_URI")


def refresh(registry: Registry, record: RunRecord) -> RunStatus:
    """The run's state from its target, kept in the registry when it changed. A draft has no target yet; an
    attempt a live launch is still handing to its target is launching: the target cannot know it yet (and must not
    be taken to say it died)."""
    if record.state is RunState.DRAFT:
        return RunStatus(state=RunState.DRAFT)
    if record.state is RunState.LAUNCHING and registry.launching(record.run_id):
        return RunStatus(state=RunState.LAUNCHING)
    now = get_target(record.target).status(record)
    if record.state is RunState.PRUNED and (now.state.is_terminal or now.state is RunState.UNKNOWN):
        now = dataclasses.replace(now, state=RunState.PRUNED)  # the target saw a stop; its sweep pruned it
    changes = {}
    if now.state != record.state and now.state is not RunState.UNKNOWN:
        changes["state"] = now.state
        if now.state.is_terminal:
            changes["ended"] = time.time()
    if now.restarts is not None and now.restarts != record.restarts:
        changes["restarts"] = now.restarts
    handle = {key: value for key, value in (now.handle or {}).items() if record.handle.get(key) != value}
    if changes or handle:
        registry.update(record.run_id, handle=handle, **changes)
        if changes.get("state") is RunState.FINISHED:
            from launcher.registering import register_when_finished

            register_when_finished(registry, registry.get(record.run_id))
    return now


def run_view(registry: Registry, record: RunRecord, *, reachable: bool = True) -> RunView:
    """The run as `launch status` and the hub show it, its state asked of its target (unless it cannot be)."""
    now = refresh(registry, record) if reachable else RunStatus(state=RunState.UNKNOWN)
    name, overrides = _launched_as(record.recipe_document, record.run_id) if record.recipe_document else (
        record.recipe, ())
    return RunView(id=record.run_id, name=name, recipe=record.recipe, target=record.target, state=now.state,
                   step=now.step, total_steps=now.total,
                   restarts=now.restarts if now.restarts is not None else record.restarts,
                   started=record.started, ended=record.ended, overrides=list(overrides),
                   failure=Handle.of(record).failure, sweep_id=record.sweep_id, cell=record.cell,
                   task=record.task, launched_by=record.launched_by, project=Path(record.project).name,
                   job_of=job.run_id if (job := WeightsJobOf.of(record)) else None, job=job.kind.value if job else None,
                   **ledger_fields(record))


def listed_view(registry: Registry, record: RunRecord) -> RunView:
    """A row of `launch status`'s list: a platform's run that ended is shown as its record says, not asked again
    (a round trip per run listed, failing while the platform is out of reach). `launch status RUN` and a new
    launch of the run still ask: a run just stopped may still be checkpointing there."""
    if record.state.is_terminal and not get_target(record.target).RUNS_HERE:
        return run_view(registry, record, reachable=False).model_copy(update={"state": record.state})
    return run_view(registry, record)


def ledger_fields(record: RunRecord) -> dict:
    """The RunView fields of the run's ledger summary as last read (none where it never was)."""
    ledger = record.ledger
    if ledger is None:
        return {}
    return {"goodput": ledger.goodput, "device_hours": ledger.device_hours, "device_unit": ledger.device_unit}


@functools.lru_cache(maxsize=2048)
def _launched_as(recipe_document: str, run_id: str) -> tuple[str, tuple[str, ...]]:
    """The name and overrides of the recipe a launch shipped, parsed once per document: the hub lists the same
    window of runs every couple of seconds, and a parse (YAML, then validation) costs about a millisecond."""
    launched = from_shipped(recipe_document, run_id)
    return launched.recipe.name, launched.overrides


def logs(record: RunRecord, follow: bool) -> Iterator[str]:
    if record.state is RunState.DRAFT:
        return iter(())
    return get_target(record.target).logs(record, follow)


def stop(registry: Registry, record: RunRecord) -> RunState:
    """Ask the target to stop the run gracefully; a state the run's own supervisor wrote meanwhile stands."""
    if record.state is RunState.DRAFT:
        raise LaunchError(f"run {record.run_id} is a draft: nothing to stop (launch it from the hub first)")
    target = get_target(record.target)
    if not target.RUNS_HERE:
        _stop_request(record, ask=True)  # the attempt then ends `stopped`, not `preempted` (a run here: its supervisor)
    state = target.stop(record)
    current = registry.get(record.run_id)
    if current.state.is_terminal:
        return current.state
    registry.update(record.run_id, state=state, **({"ended": time.time()} if state.is_terminal else {}))
    return state


def _stop_request(record: RunRecord, *, ask: bool) -> None:
    """Leave (or take back) a person's stop request in a platform run's store, for the trainer to read when the
    platform's SIGTERM comes. Best effort: a store out of reach from here (no credentials on this machine) must not
    keep a stop from happening; the attempt is then counted preempted, as before."""
    key = f"{record.run_id}/{layout.STOP_REQUESTED}"
    try:
        store = run_store(record)
        if ask:
            store.put_bytes(b"stop requested\n", key)
        else:
            store.delete([key])
    except Exception:  # boto3 and the filesystem raise many types; each only means the request was not left
        pass


def wait_until_finished(registry: Registry, run_id: str, poll_seconds: float = 30.0) -> None:
    """Stages of a pipeline run one after another: the next may need this one's best checkpoint."""
    while True:
        state = refresh(registry, registry.get(run_id)).state
        if state is RunState.FINISHED:
            return
        if state.is_terminal:
            raise LaunchError(f"stage run {run_id} {state}: the pipeline stops here (launch logs {run_id})")
        time.sleep(poll_seconds)
