"""`create_app(project_dir, token=None)`: the hub, a FastAPI app over the same runner and registry as the CLI.

`launch hub` serves it with uvicorn; tests drive it with FastAPI's TestClient. Errors are the CLI's own one-line
messages as `{"error": ...}` (400; 404 for an unknown run; 503 for an MLflow server out of reach; 422 for a body
that is not what the route takes). `mlflow_uri`: the MLflow server whose runs logged elsewhere are listed, instead
of the recipes' (see `external`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from launcher.errors import RecipeError, UserError
from launcher.hub import api, auth, pages
from launcher.operations import ExternalRuns, Workspace

STATIC_DIR = Path(__file__).parent / "static"


def plotly_js() -> Path:
    """plotly.js as the installed `plotly` package bundles it: the pages draw charts offline."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(workspace: Union[Workspace, Path], token: Optional[str] = None, *, poll_seconds: float = 0.5,
               mlflow_uri: Optional[str] = None) -> FastAPI:
    """`workspace`: the hub's project and run database (every project's runs listed), or the project's
    directory."""
    app = FastAPI(title="spottrain hub", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    if not isinstance(workspace, Workspace):
        workspace = Workspace.open(Path(workspace).resolve(), every_project=True)
    app.state.workspace = workspace
    app.state.project_dir = workspace.project_dir
    app.state.token = token
    app.state.poll_seconds = poll_seconds
    app.state.external = ExternalRuns(app.state.project_dir, mlflow_uri)
    app.state.mlflow_uri = mlflow_uri  # the Models page's registry (None: as `launch models` finds it)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        lines = str(exc).splitlines() or [type(exc).__name__]
        status = getattr(exc, "status", 400)  # an error may say its own: RunNotFound 404, Unreachable 503
        body = {"error": lines[0], **({"errors": lines} if len(lines) > 1 else {})}
        if isinstance(exc, RecipeError):  # the form puts each reason beside its field
            body["fields"] = {error.key: error.reason for error in (exc, *exc.also) if error.key}
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse({"error": f"{where}: {first['msg']}" if where else first["msg"]}, status_code=422)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_bundle():
        return FileResponse(plotly_js(), media_type="application/javascript",
                            headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    auth.install(app, token, pages.login_page)
    return app
