"""The JSON API: the pages use it, a script can curl it. Routes call the operations and serialise what they
return; errors are `{"error": "<the CLI's one-line message>"}` with a 4xx code (see `app`)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from launcher import operations as ops
from launcher.hub import stream
from launcher.operations import comparing
from launcher.views import AblationView, CheckpointsView, HubRunView, LedgerView, SearchSweepView

router = APIRouter(prefix="/api")


def workspace(request: Request) -> ops.Workspace:
    """The hub's project and run database, opened once when it started."""
    return request.app.state.workspace


class NewRun(BaseModel):
    recipe: str
    target: str = "local"
    profile: Optional[str] = None
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted key → value.")
    name: Optional[str] = None
    launch: bool = False

    def draft(self) -> ops.DraftRequest:
        return ops.DraftRequest(self.recipe, self.target, self.profile, self.overrides, self.name)


class Clone(BaseModel):
    overrides: dict[str, Any] = Field(default_factory=dict, description="Changes to the run's settings.")


class DryRun(BaseModel):
    recipe: str
    target: str = "local"
    profile: Optional[str] = None
    overrides: dict[str, Any] = Field(default_factory=dict)


def _state(ws: ops.Workspace, run_id: str) -> dict:
    return {"id": run_id, "state": str(ws.registry.get(run_id).state)}


@router.get("/runs", response_model=list[HubRunView])
def list_runs(response: Response, ws: ops.Workspace = Depends(workspace),
              limit: int = Query(ops.PAGE_SIZE, ge=1, description="How many runs: the newest."),
              offset: int = Query(0, ge=0, description="Skip this many newest runs first (the next page).")):
    """The newest `limit` runs (after the `offset` newest), oldest first; `X-Total-Count` says how many there are."""
    listed = ops.listing(ws, limit, offset)
    response.headers["X-Total-Count"] = str(listed.window["total"])
    return listed.views


@router.get("/runs/{run_id}", response_model=HubRunView)
def get_run(run_id: str, ws: ops.Workspace = Depends(workspace)):
    return ops.run(ws, run_id)


@router.post("/runs", status_code=201)
def create_run(body: NewRun, ws: ops.Workspace = Depends(workspace)):
    record = ops.create(ws, body.draft(), launch=body.launch)
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/runs/{run_id}/edit")
def edit_draft(run_id: str, body: NewRun, ws: ops.Workspace = Depends(workspace)):
    ops.save_draft(ws, body.draft(), run_id=run_id)
    if body.launch:
        ops.launch_draft(ws, run_id)
    return _state(ws, run_id)


@router.post("/runs/{run_id}/launch")
def launch_run(run_id: str, ws: ops.Workspace = Depends(workspace)):
    ops.launch_draft(ws, run_id)
    return _state(ws, run_id)


@router.post("/runs/{run_id}/stop")
def stop_run(run_id: str, ws: ops.Workspace = Depends(workspace)):
    return {"id": run_id, "state": str(ops.stop(ws, run_id))}


@router.post("/runs/{run_id}/resume")
def resume_run(run_id: str, ws: ops.Workspace = Depends(workspace)):
    ops.resume(ws, run_id)
    return _state(ws, run_id)


@router.post("/runs/{run_id}/clone", status_code=201)
def clone_run(run_id: str, body: Optional[Clone] = None, ws: ops.Workspace = Depends(workspace)):
    record = ops.clone(ws, run_id, (body or Clone()).overrides)
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/dry-run")
def dry_run(body: DryRun, ws: ops.Workspace = Depends(workspace)):
    """`launch recipe --dry-run`: the summary and the document, secrets masked."""
    request = ops.LaunchRequest(body.recipe, body.target, profile=body.profile,
                                overrides=ops.override_list(body.overrides))
    planned = ops.prepare(ws, request, ops.DependencyLookup.DESCRIBE)
    first = planned.cells[0] if isinstance(planned, ops.PlannedSweep) else planned
    return {"summary": first.summary, "document": first.document, "run_id": first.run_id}


@router.get("/runs/{run_id}/metrics")
def run_metrics(run_id: str, ws: ops.Workspace = Depends(workspace)):
    return ops.metric_histories(ws, run_id)


@router.get("/external-runs", response_model=ops.ExternalRunsView)
def external_runs(request: Request):
    """MLflow runs other scripts logged into the recipes' experiments (read-only; see `external_runs`)."""
    return request.app.state.external.listing()


@router.get("/external-runs/{mlflow_run_id}", response_model=ops.ExternalRunDetail)
def external_run(mlflow_run_id: str, request: Request):
    return request.app.state.external.detail(mlflow_run_id)


@router.get("/external-runs/{mlflow_run_id}/metrics")
def external_run_metrics(mlflow_run_id: str, request: Request):
    return request.app.state.external.histories(mlflow_run_id)


@router.get("/runs/{run_id}/system")
def run_system_metrics(run_id: str, ws: ops.Workspace = Depends(workspace)):
    return ops.system_histories(ws, run_id)


@router.get("/runs/{run_id}/checkpoints", response_model=CheckpointsView)
def run_checkpoints(run_id: str, ws: ops.Workspace = Depends(workspace)):
    return ops.checkpoints(ws, run_id)


@router.get("/runs/{run_id}/ledger", response_model=LedgerView)
def run_ledger(run_id: str, ws: ops.Workspace = Depends(workspace)):
    return ops.ledger(ws, run_id)


@router.get("/compare")
def compare(run: list[str] = Query(default_factory=list), ws: ops.Workspace = Depends(workspace)):
    """The runs' settings that differ and their final metrics, in the order both faces list them (losses and
    evaluation metrics first); `bookkeeping` names those the page hides unless asked (`launch compare --all`)."""
    if len(run) < 2:
        return JSONResponse({"error": "compare: name at least two runs (?run=A&run=B)"}, status_code=400)
    page = ops.compare_page(ws, run)
    return {"runs": run, "config_diff": page.view.config_diff, "metrics": page.view.metrics,
            "bookkeeping": page.bookkeeping, "usage": page.usage}


@router.get("/compare-sweep/{sweep_id}", response_model=AblationView)
def compare_sweep(sweep_id: str, ws: ops.Workspace = Depends(workspace),
                  metric: list[str] = Query(default_factory=list, description="Columns instead of the "
                                                                                 "evaluation metrics.")):
    """`launch compare SWEEP --json`: the sweep's cells × final metrics (nothing written)."""
    return comparing.sweep_view(ws, sweep_id, metric)


@router.get("/runs/{run_id}/events")
def run_events(run_id: str, request: Request, ws: ops.Workspace = Depends(workspace)):
    watch = ops.RunWatch(ws, run_id)
    return StreamingResponse(stream.run_events(watch, request.app.state.poll_seconds),
                             media_type="text/event-stream", headers=stream.HEADERS)


@router.get("/events")
def all_events(request: Request, ws: ops.Workspace = Depends(workspace),
               offset: int = Query(0, ge=0, description="The Runs page's window: skip this many newest runs.")):
    return StreamingResponse(stream.list_events(ws, request.app.state.poll_seconds, offset),
                             media_type="text/event-stream", headers=stream.HEADERS)


# --- sweeps a search explores (asha, hyperband, median) ---------------------------------------------------------


class SearchedSweep(BaseModel):
    sweep_id: str
    recipe: str
    target: str
    method: str
    state: str = Field(description="running, stopping, stopped or finished.")


@router.get("/sweeps", response_model=list[SearchedSweep])
def searched_sweeps(ws: ops.Workspace = Depends(workspace)):
    """The sweeps a search explores (each has a page, /sweeps/ID); a plain grid sweep is not among them."""
    return [SearchedSweep(sweep_id=r.sweep_id, recipe=r.recipe, target=r.target, method=r.method, state=str(r.state))
            for r in ops.searched_sweeps(ws)]


@router.get("/sweeps/{sweep_id}", response_model=SearchSweepView)
def sweep_report(sweep_id: str, ws: ops.Workspace = Depends(workspace)):
    """`launch sweep status SWEEP --json`: each cell's metric against its budget, the decisions, the best cell,
    steps against the full grid, and the money."""
    return ops.search_report(ws, sweep_id)


@router.post("/sweeps/{sweep_id}/stop")
def stop_sweep(sweep_id: str, ws: ops.Workspace = Depends(workspace)):
    """`launch sweep stop SWEEP`: its controller stops every live cell gracefully, then marks it stopped."""
    return {"id": sweep_id, "state": str(ops.stop_search(ws, sweep_id))}


@router.post("/sweeps/{sweep_id}/resume")
def resume_sweep(sweep_id: str, ws: ops.Workspace = Depends(workspace)):
    """`launch sweep resume SWEEP`: a controller goes on where the sweep's decisions left it."""
    started = ops.resume_search(ws, sweep_id)
    return {"id": sweep_id, "state": str(started.state), "controller": started.controller}
