"""Drafts: a run's settings kept without launching it (the hub's Save), launched later, and clones of any run as a
new draft. A draft is a run record in state `draft` whose handle keeps what the form asked (`DraftEntry`)."""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Optional

from launcher.errors import LaunchError, RunIdTaken
from launcher.operations.launching import (DraftEntry, Submitted, keep_draft_entry, plan_run, refuse_a_weights_job,
                                           submit)
from launcher.operations.workspace import Workspace
from launcher.plan import effective_profile, new_run_id
from launcher.registry import RunRecord, this_user
from launcher.requests import DependencyLookup, DraftRequest, LaunchRequest
from launcher.targets import get_target
from spottrain_contract.job import RunState
from spottrain_contract.recipe import from_shipped, load_recipe, settings_of


NEW_ID_TRIES = 5  # a new draft whose id another run holds takes a fresh id, this many times at most


def override_list(overrides: Mapping[str, Any]) -> tuple[str, ...]:
    """`{"train.optim.lr": 0.002}` → `("train.optim.lr=0.002",)`: strings go as typed in a form (YAML types them,
    as on the command line), other JSON values as JSON, which YAML reads back the same."""
    return tuple(f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items())


def override_mapping(overrides) -> dict[str, str]:
    """`("train.optim.lr=0.002",)` → `{"train.optim.lr": "0.002"}`: the shape the hub's API takes and returns."""
    return dict(text.partition("=")[::2] for text in overrides)


def save_draft(ws: Workspace, request: DraftRequest, run_id: Optional[str] = None) -> RunRecord:
    """Validate the recipe with its overrides (a bad value is the loader's one-line error) and keep it as a draft;
    `run_id` rewrites that draft."""
    get_target(request.target)
    profile = effective_profile(LaunchRequest(request.recipe, request.target, profile=request.profile))
    loaded = load_recipe(request.recipe, project_dir=ws.project_dir, profile=profile,
                         overrides=override_list(request.overrides))
    entry = DraftEntry(recipe=loaded.name, target=request.target, profile=profile, overrides=dict(request.overrides),
                       name=(request.name or "").strip() or loaded.recipe.name)
    if run_id is not None:
        _draft(ws, run_id, "clone it to change its settings")
        return ws.registry.update(run_id, recipe=loaded.name, target=request.target, handle=entry.entries(),
                                  task=loaded.recipe.task)
    for _ in range(NEW_ID_TRIES - 1):
        try:
            return _new_draft(ws, loaded, request.target, entry)
        except RunIdTaken:
            pass  # another run holds the id drawn: draw again
    return _new_draft(ws, loaded, request.target, entry)


def _new_draft(ws: Workspace, loaded, target: str, entry: DraftEntry) -> RunRecord:
    record = RunRecord(run_id=new_run_id(loaded.name), recipe=loaded.name, target=target, state=RunState.DRAFT,
                       started=time.time(), store="", local_dir="", tracking_uri="", handle=entry.entries(),
                       project=str(ws.project_dir), launched_by=this_user(), task=loaded.recipe.task)
    ws.registry.create(record)
    return record


def launch_draft(ws: Workspace, run_id: str) -> Submitted:
    """Submit the draft as `launch recipe --detach` would (a run here starts in the background under its
    supervisor; a platform run is handed to its platform)."""
    record = _draft(ws, run_id, "clone it to launch it again")
    entry = DraftEntry.of(record)
    request = LaunchRequest(entry.recipe, record.target, profile=entry.profile,
                            overrides=override_list(entry.overrides), run_id=run_id)
    submitted = submit(ws, plan_run(ws, request, DependencyLookup.REQUIRE))
    keep_draft_entry(ws, run_id, entry)
    return submitted


def create(ws: Workspace, request: DraftRequest, *, launch: bool) -> RunRecord:
    """A new draft, launched at once when `launch`: a launch that fails leaves nothing behind, as `launch recipe`
    does."""
    record = save_draft(ws, request)
    if not launch:
        return record
    try:
        launch_draft(ws, record.run_id)
    except BaseException:
        ws.registry.delete(record.run_id)
        raise
    return ws.registry.get(record.run_id)


def clone(ws: Workspace, run_id: str, changes: Mapping[str, Any]) -> RunRecord:
    """A new draft with the run's recipe, target, profile and overrides, plus `changes`, named `<name> (copy)`."""
    record = ws.registry.get(run_id)
    refuse_a_weights_job(record, "cloned")
    entry = launched_settings(record)
    return save_draft(ws, DraftRequest(entry.recipe, record.target, entry.profile, {**entry.overrides, **changes},
                                       f"{display_name(record)} (copy)"))


def launched_settings(record: RunRecord) -> DraftEntry:
    """recipe, profile and overrides (as a mapping) of a draft, or of a run launched from the CLI or the hub."""
    entry = DraftEntry.of(record)
    if entry is not None:
        return entry
    if not record.recipe_document:
        raise LaunchError(f"run {record.run_id}: its launch kept no recipe to clone")
    loaded = from_shipped(record.recipe_document, record.run_id)
    return DraftEntry(recipe=loaded.name, target=record.target, profile=loaded.profile,
                      overrides=override_mapping(loaded.overrides))


def draft_settings(ws: Workspace, record: RunRecord) -> Optional[dict[str, str]]:
    """A draft's settings, flattened, as its recipe, profile and overrides load now; None for a run no draft."""
    entry = DraftEntry.of(record)
    if record.state is not RunState.DRAFT or entry is None:
        return None
    loaded = load_recipe(entry.recipe, project_dir=ws.of_run(record.project).project_dir, profile=entry.profile,
                         overrides=override_list(entry.overrides))
    return settings_of(loaded.recipe)


def draft_entry(ws: Workspace, run_id: str) -> DraftEntry:
    """What the form asked of a draft: recipe, target, profile, overrides (a mapping) and name."""
    return DraftEntry.of(_draft(ws, run_id, "clone it to change its settings"))


def display_name(record: RunRecord) -> str:
    entry = DraftEntry.of(record)
    if entry and entry.name:
        return entry.name
    if record.recipe_document:
        return from_shipped(record.recipe_document, record.run_id).recipe.name
    return record.recipe


def _draft(ws: Workspace, run_id: str, otherwise: str) -> RunRecord:
    record = ws.registry.get(run_id)
    if record.state is not RunState.DRAFT:
        raise LaunchError(f"run {run_id} is {record.state}, not a draft: {otherwise}")
    return record
