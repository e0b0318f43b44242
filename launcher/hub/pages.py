"""The pages: server-rendered Jinja (autoescape on, never turned off for user data), live through the JSON API
and its event streams (static/hub.js). Templates only display; every decision is in `runs` or the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import jinja2
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from launcher.hub import auth, runs, usage
from launcher.hub.form import train_fields
from launcher.registry import Registry
from launcher.targets import target_names
from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState
from spottrain_contract.recipe import load_recipe, recipe_names

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True))

STATES = [state.value for state in RunState]


def _render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    context.setdefault("csrf", getattr(request.state, "csrf", ""))
    context.setdefault("signed_in", request.app.state.token is not None)
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def _error(request: Request, exc: UserError) -> HTMLResponse:
    status = getattr(exc, "status", 400)  # as the API's (see app)
    return _render(request, "error.html", status_code=status, message=str(exc).splitlines()[0])


def login_page(request: Request, status_code: int = 200, failed: bool = False) -> HTMLResponse:
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _render(request, "login.html", status_code=status_code, next=nxt if nxt != "/login" else "/",
                   failed=failed, csrf="")


@router.get("/login")
def login_form(request: Request, next: str = "/"):
    return login_page(request)


@router.post("/login")
def login(request: Request, token: str = Form(""), next: str = Form("/")):
    expected = request.app.state.token
    if expected is None:
        return RedirectResponse("/", status_code=303)
    if not auth.token_ok(expected, token):
        return login_page(request, status_code=401, failed=True)
    target = next if next.startswith("/") and not next.startswith("//") and "\\" not in next else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, auth.session_value(expected), httponly=True, samesite="strict",
                        path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, state: Optional[str] = None, offset: int = Query(0, ge=0)):
    """The newest `runs.PAGE_SIZE` runs after the `offset` newest (older ones a page further). The filters (state,
    target, recipe, who, q) are the page's query too: the script applies them to the live window."""
    registry = Registry(request.app.state.project_dir, every_project=True)
    views, sweeps = runs.listing(registry, offset=offset)
    return _render(request, "runs.html", runs=views, sweeps=sweeps, states=STATES, state=state or "",
                   window=runs.window(registry.count(), offset))


@router.get("/new", response_class=HTMLResponse)
def new_run_page(request: Request, recipe: Optional[str] = None, target: str = "local",
                 profile: Optional[str] = None, draft: Optional[str] = None):
    project = request.app.state.project_dir
    registry = Registry(project, every_project=True)
    names = recipe_names(project)
    name, overrides, draft_meta = None, {}, None
    try:
        if draft:
            record = runs.get_record(registry, draft)
            if record.state is not RunState.DRAFT:
                raise UserError(f"run {draft} is {record.state}, not a draft: clone it to change its settings")
            draft_meta = record.handle[runs.HUB]
            recipe, target, profile = draft_meta["recipe"], draft_meta["target"], draft_meta["profile"]
            overrides = draft_meta["overrides"]
        recipe = recipe or ("baseline" if "baseline" in names else names[0])
        profile = runs.default_profile(target, profile) if profile is None else (profile or None)
        profiles = list(load_recipe(recipe, project_dir=project).recipe.profiles)
        task, fields = train_fields(project, recipe, profile, runs.override_list(overrides))
    except UserError as exc:
        return _error(request, exc)
    field_keys = {f.key for f in fields}
    other = [line for line in runs.override_list({k: v for k, v in overrides.items() if k not in field_keys})]
    name = draft_meta["name"] if draft_meta else ""
    return _render(request, "new.html", recipes=names, recipe=recipe, targets=target_names(), target=target,
                   profiles=profiles, profile=profile or "", task=task, fields=fields, other="\n".join(other),
                   draft=draft, name=name)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str):
    registry = Registry(request.app.state.project_dir, every_project=True)
    try:
        view = runs.hub_view(registry, runs.get_record(registry, run_id)).model_dump(mode="json")
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "run.html", run=view)


@router.get("/mlflow-runs/{mlflow_run_id}", response_class=HTMLResponse)
def external_run_page(request: Request, mlflow_run_id: str):
    """A run logged elsewhere: read-only (no Stop, Clone or Launch)."""
    try:
        run = request.app.state.external.detail(mlflow_run_id).model_dump(mode="json")
    except UserError as exc:
        return _error(request, exc)
    return _render(request, "external_run.html", run=run)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run: list[str] = Query(default_factory=list)):
    project = request.app.state.project_dir
    registry = Registry(project, every_project=True)
    try:
        if len(run) < 2:
            raise UserError("compare: tick at least two runs on the Runs page")
        records = [runs.get_record(registry, run_id) for run_id in run]
        diff = runs.config_diff(project, records)
        finals = runs.final_metrics(records)
        used = usage.compare_usage(registry, records)
    except UserError as exc:
        return _error(request, exc)
    names = [runs.display_name(r) for r in records]
    return _render(request, "compare.html", runs=[{"id": r.run_id, "name": n} for r, n in zip(records, names)],
                   diff=diff, finals=finals, usage=used)
