"""The pages: server-rendered Jinja (autoescape on, never turned off for user data), live through the JSON API
and its event streams (static/hub.js). Templates only display; every decision is in the operations."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import jinja2
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from launcher import operations as ops
from launcher.errors import UserError
from launcher.hub import auth
from launcher.hub.form import recipe_fields
from launcher.operations import comparing
from launcher.views.tables import dollars
from spottrain_contract.job import RunState

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True))
templates.env.filters["dollars"] = dollars

STATES = [state.value for state in RunState]


def _render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    context.setdefault("csrf", getattr(request.state, "csrf", ""))
    context.setdefault("signed_in", request.app.state.token is not None)
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def _error(request: Request, exc: UserError) -> HTMLResponse:
    status = getattr(exc, "status", 400)  # as the API's (see app)
    return _render(request, "error.html", status_code=status, message=str(exc).splitlines()[0],
                   not_found=status == 404)


def login_page(request: Request, status_code: int = 200, failed: bool = False,
               next: Optional[str] = None) -> HTMLResponse:
    """The form, returning to `next` once signed in (by default the page asked for: the guard shows this form
    in its place)."""
    if next is None:
        next = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _render(request, "login.html", status_code=status_code, next=auth.local_target(next),
                   failed=failed, csrf="")


@router.get("/login")
def login_form(request: Request, next: str = "/"):
    return login_page(request, next=next)


@router.post("/login")
def login(request: Request, token: str = Form(""), next: str = Form("/")):
    expected = request.app.state.token
    if expected is None:
        return RedirectResponse("/", status_code=303)
    if not auth.token_ok(expected, token):
        return login_page(request, status_code=401, failed=True, next=next)
    response = RedirectResponse(auth.local_target(next), status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, auth.session_value(expected), httponly=True, samesite="strict",
                        path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, state: Optional[str] = None, offset: int = Query(0, ge=0)):
    """The newest `PAGE_SIZE` runs after the `offset` newest (older ones a page further). The filters (state,
    target, recipe, who, q) are the page's query too: the script applies them to the live window."""
    listed = ops.listing(request.app.state.workspace, offset=offset)
    return _render(request, "runs.html", runs=[view.model_dump(mode="json") for view in listed.views],
                   sweeps=listed.sweeps, states=STATES, state=state or "", window=listed.window)


@router.get("/new", response_class=HTMLResponse)
def new_run_page(request: Request, recipe: Optional[str] = None, target: str = "local",
                 profile: Optional[str] = None, draft: Optional[str] = None):
    ws = request.app.state.workspace
    overrides, draft_entry = {}, None
    try:
        if draft:
            draft_entry = ops.draft_entry(ws, draft)
            recipe, target, profile = draft_entry.recipe, draft_entry.target or target, draft_entry.profile
            overrides = draft_entry.overrides
        names = ops.recipe_names(ws)
        recipe = recipe or ("baseline" if "baseline" in names else names[0])
        choices = ops.recipe_choices(ws, recipe, target)
        profile = choices.default_profile if profile is None else (profile or None)
        task, fields = recipe_fields(ws.project_dir, recipe, profile, list(ops.override_list(overrides)))
    except UserError as exc:
        return _error(request, exc)
    field_keys = {f.key for f in fields}
    other = ops.override_list({k: v for k, v in overrides.items() if k not in field_keys})
    name = draft_entry.name if draft_entry else ""
    return _render(request, "new.html", recipes=choices.recipes, recipe=recipe, targets=choices.targets,
                   target=target, profiles=choices.profiles, profile=profile or "", task=task, fields=fields,
                   other="\n".join(other), draft=draft, name=name)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str):
    try:
        view = ops.run(request.app.state.workspace, run_id).model_dump(mode="json")
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "run.html", run=view)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request):
    """The Model Registry: each name's versions, aliases and the run each came from (`launch models`)."""
    try:
        found = ops.models(request.app.state.workspace, request.app.state.mlflow_uri)
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "models.html", models=[model.model_dump(mode="json") for model in found])


@router.get("/mlflow-runs/{mlflow_run_id}", response_class=HTMLResponse)
def external_run_page(request: Request, mlflow_run_id: str):
    """A run logged elsewhere: read-only (no Stop, Clone or Launch)."""
    try:
        run = request.app.state.external.detail(mlflow_run_id).model_dump(mode="json")
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "external_run.html", run=run)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run: list[str] = Query(default_factory=list), all: bool = False):
    """Runs side by side: the losses and evaluation metrics; the bookkeeping ones too with `all` (the page's
    toggle, as `launch compare --all`)."""
    try:
        if len(run) < 2:
            raise UserError("compare: tick at least two runs on the Runs page")
        page = ops.compare_page(request.app.state.workspace, run)
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "compare.html", runs=[{"id": r, "name": n} for r, n in zip(run, page.names)],
                   diff=page.view.config_diff, rows=page.rows, show_all=all, usage=page.usage)


@router.get("/compare-sweep/{sweep_id}", response_class=HTMLResponse)
def compare_sweep_page(request: Request, sweep_id: str, metric: list[str] = Query(default_factory=list)):
    """A sweep's cells × final metrics, as `launch compare SWEEP` prints them (`metric`: its `--metric`)."""
    try:
        page = comparing.sweep_page(request.app.state.workspace, sweep_id, metric)
    except UserError as exc:
        return _error(request, exc)
    cells = [{"cell": c.cell, "run_id": c.run_id, "entries": c.entries, "values": values}
             for c, values in zip(page.view.cells, page.rows)]
    return _render(request, "compare_sweep.html", sweep_id=sweep_id, recipe=page.view.recipe,
                   metrics=page.view.metrics, cells=cells)


SWEEP_REFRESH_SECONDS = 5  # the sweep page asks again while its sweep runs (its controller looks every 5 s)


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(request: Request, sweep_id: str):
    """A sweep a search explores, as `launch sweep status SWEEP` shows it: each cell's metric against its budget
    (rungs marked, pruned cells grey, the best one highlighted), its decisions, and the money; Stop and Resume."""
    ws = request.app.state.workspace
    try:
        report = ops.search_report(ws, sweep_id)
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "sweep.html", sweep=report.model_dump(mode="json"),
                   refresh_seconds=SWEEP_REFRESH_SECONDS)
