"""`launch doctor [RECIPE] --target T`: what a launch of the recipe needs, checked online in a few seconds, before
a job finds out on a node: its secrets, its checkpoint store, its MLflow server and the target's own checks.

Each check is one row: a name, whether it passed, and on failure the one-line fix. Credentials come from the
environment and `.env`, as a launch takes them; nothing is written but the store's probe object (deleted).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator
from launcher.plan import LaunchPlan
from launcher.process_env import environment
from launcher.secrets import resolve_secrets
from launcher.targets import Check, get_target
from spottrain_contract.errors import UserError


def run_checks(plan: LaunchPlan, project_dir: Path) -> Iterator[Check]:
    """Each check as it finishes (a person sees the quick ones while the platform's, which may take half a
    minute, runs)."""
    recipe, target = plan.recipe, get_target(plan.target)
    found = resolve_secrets(recipe.secrets, project_dir, required=False)
    yield _secrets(recipe.secrets, found.names, needed=not target.RUNS_HERE)
    with environment(found.as_dict()):  # the credentials a launch passes, for this process's clients
        yield _guarded("checkpoint store", lambda: _store(plan, project_dir))
        yield _guarded("MLflow", lambda: _mlflow(plan))
        yield from target.preflight(recipe, project_dir)


def _secrets(names, found, *, needed: bool) -> Check:
    missing = [name for name in names if name not in found]
    if missing and needed:
        return Check("secrets", False, f"missing {', '.join(missing)}: export them or add them to .env "
                                       f"(names in .env.example)")
    if missing:
        return Check("secrets", True, f"not needed here; unset: {', '.join(missing)}")
    return Check("secrets", True, f"{len(names)} present ({', '.join(names) or 'none needed'})")


def _store(plan: LaunchPlan, project_dir: Path) -> Check:
    from spottrain_contract.store import open_store, probe_store

    checkpoint = plan.recipe.train.checkpoint
    uri = checkpoint.uri if "://" in checkpoint.uri else str(project_dir / checkpoint.uri)
    probe_store(open_store(uri, checkpoint.endpoint_url), f".doctor-{plan.run_id}", rank=0)
    return Check("checkpoint store", True, f"{checkpoint.uri} is writable")


def _mlflow(plan: LaunchPlan) -> Check:
    uri = plan.recipe.mlflow.tracking_uri
    if not uri:
        return Check("MLflow", True, "a local SQLite store beside the checkpoints (no server to reach)")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # MlflowException or the transport's: said in one line below
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if any(code in said for code in ("401", "403", "Unauthorized", "Forbidden", "PERMISSION_DENIED")):
            raise UserError(f"{uri} rejected the credentials: check MLFLOW_TRACKING_USERNAME and "
                            f"MLFLOW_TRACKING_PASSWORD") from None
        raise UserError(f"cannot reach {uri} ({said[:160]}): check mlflow.tracking_uri and the network") from None
    return Check("MLflow", True, f"{uri} answers, credentials accepted")


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check that fails says so in its row; only a bug is a traceback."""
    from spottrain_contract.store import StoreUnavailable

    try:
        return check()
    except (UserError, StoreUnavailable) as exc:
        return Check(name, False, str(exc))
