"""The JSON API: the pages use it, a script can curl it. Thin routes over `launcher.hub.runs`, the runner and
the registry; errors are `{"error": "<the CLI's one-line message>"}` with a 4xx code (see `app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from launcher import checkpoints_view, ledger_view, runner
from launcher.hub import external, runs, stream, usage
from launcher.registry import Registry
from launcher.views import CheckpointsView, HubRunView, LedgerView

router = APIRouter(prefix="/api")


def project_dir(request: Request) -> Path:
    return request.app.state.project_dir


def registry(request: Request) -> Registry:
    return Registry(request.app.state.project_dir, every_project=True)


class NewRun(BaseModel):
    recipe: str
    target: str = "local"
    profile: Optional[str] = None
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted key → value.")
    name: Optional[str] = None
    launch: bool = False


class Clone(BaseModel):
    overrides: dict[str, Any] = Field(default_factory=dict, description="Changes to the run's settings.")


class DryRun(BaseModel):
    recipe: str
    target: str = "local"
    profile: Optional[str] = None
    overrides: dict[str, Any] = Field(default_factory=dict)


@router.get("/runs", response_model=list[HubRunView])
def list_runs(response: Response, reg: Registry = Depends(registry),
              limit: int = Query(runs.PAGE_SIZE, ge=1, description="How many runs: the newest."),
              offset: int = Query(0, ge=0, description="Skip this many newest runs first (the next page).")):
    """The newest `limit` runs (after the `offset` newest), oldest first; `X-Total-Count` says how many there are."""
    response.headers["X-Total-Count"] = str(reg.count())
    return runs.listed_views(reg, limit, offset)


@router.get("/runs/{run_id}", response_model=HubRunView)
def get_run(run_id: str, reg: Registry = Depends(registry)):
    return runs.hub_view(reg, runs.get_record(reg, run_id))


@router.post("/runs", status_code=201)
def create_run(body: NewRun, reg: Registry = Depends(registry), project: Path = Depends(project_dir)):
    record = runs.save_draft(reg, project, recipe=body.recipe, target=body.target, profile=body.profile,
                             overrides=body.overrides, name=body.name)
    if body.launch:
        try:
            record = runs.launch_draft(reg, project, record.run_id)
        except BaseException:
            reg.delete(record.run_id)  # "Launch" that fails leaves nothing behind, as `launch recipe` does
            raise
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/runs/{run_id}/edit")
def edit_draft(run_id: str, body: NewRun, reg: Registry = Depends(registry), project: Path = Depends(project_dir)):
    record = runs.save_draft(reg, project, recipe=body.recipe, target=body.target, profile=body.profile,
                             overrides=body.overrides, name=body.name, run_id=run_id)
    if body.launch:
        record = runs.launch_draft(reg, project, run_id)
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/runs/{run_id}/launch")
def launch_run(run_id: str, reg: Registry = Depends(registry), project: Path = Depends(project_dir)):
    record = runs.launch_draft(reg, project, run_id)
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/runs/{run_id}/stop")
def stop_run(run_id: str, reg: Registry = Depends(registry)):
    state = runner.stop(reg, runs.get_record(reg, run_id))
    return {"id": run_id, "state": str(state)}


@router.post("/runs/{run_id}/resume")
def resume_run(run_id: str, reg: Registry = Depends(registry)):
    record = runs.resume(reg, run_id)
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/runs/{run_id}/clone", status_code=201)
def clone_run(run_id: str, body: Optional[Clone] = None, reg: Registry = Depends(registry),
              project: Path = Depends(project_dir)):
    record = runs.clone(reg, project, run_id, (body or Clone()).overrides)
    return {"id": record.run_id, "state": str(record.state)}


@router.post("/dry-run")
def dry_run(body: DryRun, project: Path = Depends(project_dir)):
    return runs.dry_run(project, body.recipe, body.target, body.profile, body.overrides)


@router.get("/runs/{run_id}/metrics")
def run_metrics(run_id: str, reg: Registry = Depends(registry)):
    return runs.metric_histories(runs.get_record(reg, run_id))


@router.get("/external-runs", response_model=external.ExternalRunsView)
def external_runs(request: Request):
    """MLflow runs other scripts logged into the recipes' experiments (read-only; see `external`)."""
    return request.app.state.external.listing()


@router.get("/external-runs/{mlflow_run_id}", response_model=external.ExternalRunDetail)
def external_run(mlflow_run_id: str, request: Request):
    return request.app.state.external.detail(mlflow_run_id)


@router.get("/external-runs/{mlflow_run_id}/metrics")
def external_run_metrics(mlflow_run_id: str, request: Request):
    return request.app.state.external.histories(mlflow_run_id)


@router.get("/runs/{run_id}/system")
def run_system_metrics(run_id: str, reg: Registry = Depends(registry)):
    return usage.system_histories(runs.get_record(reg, run_id))


@router.get("/runs/{run_id}/checkpoints", response_model=CheckpointsView)
def run_checkpoints(run_id: str, reg: Registry = Depends(registry)):
    return checkpoints_view.run_checkpoints(runs.get_record(reg, run_id))


@router.get("/runs/{run_id}/ledger", response_model=LedgerView)
def run_ledger(run_id: str, reg: Registry = Depends(registry)):
    return ledger_view.run_ledger_view(reg, runs.get_record(reg, run_id))


@router.get("/compare")
def compare(run: list[str] = Query(default_factory=list), reg: Registry = Depends(registry),
            project: Path = Depends(project_dir)):
    if len(run) < 2:
        return JSONResponse({"error": "compare: name at least two runs (?run=A&run=B)"}, status_code=400)
    records = [runs.get_record(reg, run_id) for run_id in run]
    return {"runs": run, "config_diff": runs.config_diff(project, records), "metrics": runs.final_metrics(records),
            "usage": usage.compare_usage(reg, records)}


@router.get("/runs/{run_id}/events")
def run_events(run_id: str, request: Request, reg: Registry = Depends(registry)):
    record = runs.get_record(reg, run_id)
    return StreamingResponse(stream.run_events(reg, record.run_id, request.app.state.poll_seconds),
                             media_type="text/event-stream", headers=stream.HEADERS)


@router.get("/events")
def all_events(request: Request, reg: Registry = Depends(registry),
               offset: int = Query(0, ge=0, description="The Runs page's window: skip this many newest runs.")):
    return StreamingResponse(stream.list_events(reg, request.app.state.poll_seconds, offset),
                             media_type="text/event-stream", headers=stream.HEADERS)
