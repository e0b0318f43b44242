"""What the hub does with runs, over the same runner and registry the CLI uses: drafts (a run saved, not yet
launched), launching them the way `launch recipe --detach` does, cloning, comparing settings, and reading a run's
metric histories from MLflow. The routes in `api` and `pages` are thin functions over these.

A draft is a registry record in state `draft` whose handle keeps what the form asked for (`handle["hub"]`:
recipe, profile, target, overrides as a mapping, a display name). Launching it submits a plan with the draft's
run id, so the run keeps the id (and page) the draft had.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from launcher import runner, sweep_status
from launcher.errors import LaunchError
from launcher.hub import ledgers
from launcher.registry import Registry, RunRecord, this_user
from launcher.targets import get_target
from launcher.views import HubRunView
from spottrain_contract.errors import UserError
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, RunState, sqlite_store_absent
from spottrain_contract.recipe import from_shipped, load_recipe, settings_of

HUB = "hub"  # the handle entry holding what the hub knows of a run
PAGE_SIZE = 200  # the runs a listing shows unless asked for more: the newest


class NotFound(LaunchError):
    """A run id this project does not know (the API answers 404)."""

    status = 404


def get_record(registry: Registry, run_id: str) -> RunRecord:
    if not registry.exists(run_id):
        raise NotFound(f"no run '{run_id}' launched from this project")
    return registry.get(run_id)


def override_list(overrides: dict[str, Any]) -> list[str]:
    """`{"train.optim.lr": 0.002}` → `["train.optim.lr=0.002"]`: strings go as typed in a form (YAML types them,
    as on the command line), other JSON values as JSON, which YAML reads back the same."""
    listed = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        listed.append(f"{key}={text}")
    return listed


def default_profile(target: str, profile: Optional[str]) -> Optional[str]:
    """What `launch recipe` applies: the given profile, else the target's default (local: `local`)."""
    return profile or get_target(target).DEFAULT_PROFILE


def dry_run(project_dir: Path, recipe: str, target: str, profile: Optional[str], overrides: dict) -> dict:
    """`launch recipe --dry-run`: the summary and the document, secrets masked, through the display render."""
    from launcher.display import render_for_display

    plan, document = render_for_display(recipe, target=target, project_dir=project_dir,
                                        profile=default_profile(target, profile), overrides=override_list(overrides),
                                        stages="resolve")
    return {"summary": plan.summary(get_target(target).describe(plan.recipe)), "document": document,
            "run_id": plan.run_id}


def save_draft(registry: Registry, project_dir: Path, *, recipe: str, target: str, profile: Optional[str],
               overrides: dict, name: Optional[str], run_id: Optional[str] = None) -> RunRecord:
    """Validate the recipe with its overrides (a bad value is the loader's one-line error) and keep it as a
    draft; `run_id` rewrites an existing draft."""
    from launcher.plan import new_run_id

    get_target(target)
    profile = default_profile(target, profile)
    loaded = load_recipe(recipe, project_dir=project_dir, profile=profile, overrides=override_list(overrides))
    meta = {"recipe": loaded.name, "target": target, "profile": profile, "overrides": dict(overrides),
            "name": (name or "").strip() or loaded.recipe.name}
    if run_id is not None:
        record = get_record(registry, run_id)
        if record.state is not RunState.DRAFT:
            raise LaunchError(f"run {run_id} is {record.state}, not a draft: clone it to change its settings")
        return registry.update(run_id, recipe=loaded.name, target=target, handle={HUB: meta},
                               task=loaded.recipe.task)
    record = RunRecord(run_id=new_run_id(loaded.name), recipe=loaded.name, target=target, state=RunState.DRAFT,
                       started=time.time(), store="", local_dir="", tracking_uri="", handle={HUB: meta},
                       project=str(project_dir), launched_by=this_user(), task=loaded.recipe.task)
    registry.save(record)
    return record


def launch_draft(registry: Registry, project_dir: Path, run_id: str) -> RunRecord:
    """Submit the draft through the runner as `launch recipe --detach` would (a run here starts in the
    background under its supervisor; a platform run is handed to its platform)."""
    from launcher.display import render_for_display

    record = get_record(registry, run_id)
    if record.state is not RunState.DRAFT:
        raise LaunchError(f"run {run_id} is {record.state}, not a draft: clone it to launch it again")
    meta = record.handle[HUB]
    plan, _ = render_for_display(meta["recipe"], target=meta["target"], project_dir=project_dir,
                                 profile=meta["profile"], overrides=override_list(meta["overrides"]), run_id=run_id,
                                 stages="require")
    return _submitted(registry, plan, project_dir, meta)


def resume(registry: Registry, run_id: str) -> RunRecord:
    """A stopped or failed run's next attempt, made as `launch recipe RECIPE --run-id RUN` makes it: the settings
    it was launched with (its shipped recipe, which its recipe file in its project must still give), on its target,
    in the background; the trainer resumes from the newest complete checkpoint."""
    from launcher.display import render_for_display

    record = get_record(registry, run_id)
    if record.state not in (RunState.STOPPED, RunState.FAILED):
        raise LaunchError(f"run {run_id} is {record.state}: only a stopped or failed run resumes")
    project_dir = Path(record.project)
    launched = runner.launched_recipe(project_dir, run_id)
    if launched is None:
        raise LaunchError(f"run {run_id}: its launch kept no recipe to resume")
    plan, _ = render_for_display(launched.name, target=record.target, project_dir=project_dir,
                                 profile=default_profile(record.target, launched.profile),
                                 overrides=launched.overrides, run_id=run_id, stages="require", resuming=launched,
                                 cell=launched.cell.name if launched.cell else None, sweep_id=record.sweep_id)
    done = runner.completed_here(plan, project_dir)
    if done is not None:
        raise LaunchError(f"run {run_id} already finished at step {done}: nothing to resume")
    return _submitted(registry, plan, project_dir, record.handle.get(HUB))


def _submitted(registry: Registry, plan, project_dir: Path, meta: Optional[dict]) -> RunRecord:
    launched = runner.submit(plan, project_dir)
    if meta is None:
        return launched
    # the runner wrote a fresh record: the hub's entry (name, overrides as a mapping) goes back into its handle
    return registry.update(launched.run_id, handle={HUB: meta})


def clone(registry: Registry, project_dir: Path, run_id: str, changes: dict) -> RunRecord:
    """A new draft with the run's recipe, target, profile and overrides, plus `changes`, named `<name> (copy)`."""
    record = get_record(registry, run_id)
    meta = _settings_source(record)
    return save_draft(registry, project_dir, recipe=meta["recipe"], target=record.target, profile=meta["profile"],
                      overrides={**meta["overrides"], **changes}, name=f"{display_name(record)} (copy)")


def _settings_source(record: RunRecord) -> dict:
    """recipe, profile and overrides (as a mapping) of a draft or of a run launched from the CLI or the hub."""
    if HUB in record.handle:
        return record.handle[HUB]
    if not record.recipe_document:
        raise LaunchError(f"run {record.run_id}: its launch kept no recipe to clone")
    loaded = from_shipped(record.recipe_document, record.run_id)
    overrides = dict(text.partition("=")[::2] for text in loaded.overrides)
    return {"recipe": loaded.name, "profile": loaded.profile, "overrides": overrides}


def display_name(record: RunRecord) -> str:
    meta = record.handle.get(HUB)
    if meta and meta.get("name"):
        return meta["name"]
    if record.recipe_document:
        return from_shipped(record.recipe_document, record.run_id).recipe.name
    return record.recipe


def settings(project_dir: Path, record: RunRecord) -> dict[str, str]:
    """Every setting of the run, flattened: a launched run's from the recipe it shipped, a draft's from its
    recipe, profile and overrides as they load now."""
    if record.recipe_document:
        return settings_of(from_shipped(record.recipe_document, record.run_id).recipe)
    meta = record.handle.get(HUB) or {}
    if not meta:
        raise LaunchError(f"run {record.run_id}: no recipe recorded")
    loaded = load_recipe(meta["recipe"], project_dir=project_dir, profile=meta["profile"],
                         overrides=override_list(meta["overrides"]))
    return settings_of(loaded.recipe)


def config_diff(project_dir: Path, records: list[RunRecord]) -> dict[str, list[Optional[str]]]:
    """Each setting that differs between the runs: its value in each (None where one lacks it)."""
    all_settings = [settings(project_dir, r) for r in records]
    keys = sorted(set().union(*all_settings))
    return {key: [s.get(key) for s in all_settings] for key in keys
            if len({s.get(key) for s in all_settings}) > 1}


def mlflow_client_and_run(record: RunRecord):
    """The MLflow run of a launched run, or (None, None) while nothing is logged (no store file yet, no run)."""
    uri = record.tracking_uri
    if not uri or record.state is RunState.DRAFT:
        return None, None
    if sqlite_store_absent(uri):
        return None, None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None, None
    found = client.search_runs(experiments, filter_string=f"tags.`{MLFLOW_RUN_ID_TAG}` = '{record.run_id}'",
                               max_results=1)
    return (client, found[0]) if found else (None, None)


def metric_histories(record: RunRecord) -> dict[str, list[list[float]]]:
    """Every metric's history `[[step, value], ...]` (system metrics left out), for the curves."""
    client, run = mlflow_client_and_run(record)
    return {} if run is None else run_histories(client, run)


def run_histories(client, run) -> dict[str, list[list[float]]]:
    """`metric_histories` of an MLflow run (`client`: an MlflowClient of its store), ours or logged elsewhere. A NaN
    or infinite value (a diverged run) is None: JSON has neither, and the chart leaves a gap."""
    histories = {}
    for key in sorted(run.data.metrics):
        if key.startswith("system/"):
            continue
        points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        histories[key] = [[step, finite(value)] for step, value in points]
    return histories


def finite(value: Optional[float]) -> Optional[float]:
    """A metric value as JSON can carry it: NaN and infinities (a diverged run) are None (no value to show)."""
    return value if value is not None and math.isfinite(value) else None


def final_metrics(records: Iterable[RunRecord]) -> dict[str, list[Optional[float]]]:
    finals = []
    for record in records:
        _, run = mlflow_client_and_run(record)
        finals.append(dict(run.data.metrics) if run is not None else {})
    keys = sorted(k for k in set().union(*finals) if not k.startswith("system/"))
    return {key: [finite(f.get(key)) for f in finals] for key in keys}


_losses: dict[str, tuple[str, Optional[float]]] = {}  # run id → (step, its loss): the latest step asked only


def latest_loss(record: RunRecord, step: str) -> Optional[float]:
    """`train/loss` as last logged; asked of MLflow once per step the run reports (never where its store is not
    there: see `_mlflow_client_and_run`)."""
    cached = _losses.get(record.run_id)
    if cached is None or cached[0] != step:
        try:
            _, run = mlflow_client_and_run(record)
        except Exception:  # an MLflow store out of reach must not break the list
            run = None
        cached = _losses[record.run_id] = (step, finite(run.data.metrics.get("train/loss")) if run is not None
                                           else None)
    return cached[1]


def hub_view(registry: Registry, record: RunRecord, *, with_loss: bool = True) -> HubRunView:
    """The run as `launch status` lists it (`runner.listed_view`: a platform's ended run is not asked again), plus
    what the hub adds (display name, profile, loss)."""
    try:
        view = runner.listed_view(registry, record)
    except UserError:
        view = runner.run_view(registry, record, reachable=False)
    meta = record.handle.get(HUB) or {}
    overrides = override_list(meta["overrides"]) if record.state is RunState.DRAFT and meta else view.overrides
    step = view.step
    if step == "-" and record.local_dir:  # the trainer's progress file, where the target did not report it
        from spottrain_contract.job import progress_path

        try:
            progress = json.loads(progress_path(record.local_dir, record.run_id).read_text())
            step = f"{progress['step']}/{progress['total']}"
        except (OSError, ValueError, KeyError):
            pass
    ledgers.refresh_soon(registry, record, view.state, step)
    # the name `display_name` gives, without parsing the shipped recipe again (`run_view` named it from there)
    return HubRunView(**{**view.model_dump(), "name": meta.get("name") or view.name, "overrides": overrides,
                         "step": step},
                      profile=meta.get("profile"),
                      loss=latest_loss(record, step) if with_loss and record.state is not RunState.DRAFT else None,
                      log=record.log is not None)


def listed_views(registry: Registry, limit: int = PAGE_SIZE, offset: int = 0) -> list[HubRunView]:
    """`/api/runs`'s rows: the `limit` newest runs after the `offset` newest, oldest first."""
    return [hub_view(registry, record) for record in registry.all(limit=limit, offset=offset)]


def window(total: int, offset: int, size: int = PAGE_SIZE) -> dict:
    """Where a page of the list stands among all runs: its first and last (counted from the newest) and the
    offsets of the newer and older pages (None at either end)."""
    return {"total": total, "first": min(offset + 1, total), "last": min(offset + size, total), "offset": offset,
            "newer": max(0, offset - size) if offset else None,
            "older": offset + size if offset + size < total else None}


def listing(registry: Registry, limit: int = PAGE_SIZE, offset: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """The Runs page's data, as JSON: the window of `listed_views`, and each sweep's summary by its id
    (`launch status`'s sweep row: state, cells finished, restarts) over the cells in the window."""
    views = listed_views(registry, limit, offset)
    sweeps = sweep_status.sweep_views(views)
    return ([view.model_dump(mode="json") for view in views],
            {sweep_id: sweep.model_dump(mode="json") for sweep_id, sweep in sweeps.items()})
