"""VESSL: a run on a cluster preset. Code is cloned from git, volumes imported or mounted by `volume://`.

Secrets default to VESSL's own stored secrets (`{secret: NAME}`: no value anywhere). A recipe with
`secrets_mode: inline` gets the values from `.env` instead, placed only in the document handed to VESSL's API
in memory at launch; the display render shows the mask.

The run's life goes through the vessl SDK (`pip install -e '.[vessl]'`), imported only by the functions that
talk to VESSL: `create_run` with the rendered body, `read_run`, `list_run_logs`, `terminate_run`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

import yaml

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan, cluster_summary
from launcher.render import job_env, render_template, run_script
from launcher.targets import Handle, RunStatus
from spottrain_contract.job import RunState

RUNS_HERE = False
DEFAULT_PROFILE = None
TEMPLATE = "vessl.yaml.j2"
SCHEMA_FILE = Path(__file__).with_name("vessl_run.schema.json")


def unsupported(recipe) -> Optional[str]:
    if recipe.resources.vessl is None:
        return ("resources.vessl: VESSL needs a cluster and preset "
                "(e.g. {cluster: vessl-gcp-oregon, preset: gpu-a100-large-spot})")
    vessl = recipe.resources.vessl
    if vessl.preset_for(recipe.resources.candidates) is None:
        return (f"resources.vessl.preset: no preset for {', '.join(recipe.resources.candidates)} (presets for "
                f"{', '.join(vessl.preset)}): name one for a candidate, or set a single preset")
    if recipe.resources.nodes > 1:
        return (f"resources.nodes: VESSL runs are single-node here, got {recipe.resources.nodes} "
                f"(use --target skypilot for multi-node)")
    missing = [name for name, v in recipe.volumes.items() if v.vessl is None]
    if missing:
        return f"volumes.{missing[0]}.vessl: no source backs this volume on VESSL (expected e.g. volume://NAME)"
    return None


def describe(recipe) -> str:
    return cluster_summary(recipe)


def secret_names(recipe) -> list[str]:
    """Inline secrets travel in the run's body; platform secrets are VESSL's own, referenced by name."""
    return list(recipe.secrets) if recipe.secrets_mode == "inline" else []


def preflight(recipe, project_dir) -> list:
    """Signed in with the token, into an organization and project that exist."""
    from launcher.targets import Check

    try:
        vessl, config = _signed_in(Path(project_dir))
        where = _launch_location(vessl, config)
    except LaunchError as exc:
        return [Check("VESSL", False, str(exc))]
    return [Check("VESSL", True, f"signed in: organization {where['organization_name']}, "
                                 f"project {where['project_name']}")]


def render(plan: LaunchPlan, secrets) -> str:
    r = plan.recipe
    where = plan.loaded.relpath
    problem = unsupported(r)
    if problem:
        raise LaunchError(f"{where}: {problem}")

    env = job_env(plan)
    for name in r.secrets:
        env[name] = {"secret": name} if r.secrets_mode == "platform" else secrets.value(name)
    # the commit the launch came from, so the node trains the code the dry run was made from
    ref = plan.code.commit if plan.code else r.code.ref
    checkout = [f"git checkout {shlex.quote(ref)}"] if ref else []
    return render_template(
        TEMPLATE,
        recipe_file=where,
        name=r.name,
        description=r.description or f"{r.task} stage from {where}",
        tags=[r.task, r.resources.accelerators[0], f"gpus-{r.resources.preferred_gpus}", plan.run_id],
        cluster=r.resources.vessl.cluster,
        preset=r.resources.vessl.preset_for(r.resources.candidates),
        image=r.image,
        imports={r.code.workdir: f"git://{r.code.repo}",
                 **{v.mount: v.vessl for v in r.volumes.values() if v.read_only}},
        mounts={v.mount: v.vessl for v in r.volumes.values() if not v.read_only},
        workdir=r.code.workdir,
        command="\n".join([*checkout, r.setup, run_script(plan, rendezvous="standalone")]),
        env=env,
    )


def validate(document: str) -> None:
    import jsonschema

    config = yaml.safe_load(document)
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        at = ".".join(str(p) for p in first.absolute_path) or "(document)"
        raise LaunchError(f"vessl run: {at}: {_short(first)}")


def _short(error) -> str:
    """jsonschema quotes the offending instance; for env values that may be a secret, so never echo it."""
    if error.validator in ("type", "oneOf", "pattern", "minLength", "enum"):
        return f"does not match the VESSL run spec ({error.validator}: {json.dumps(error.validator_value)[:80]})"
    return error.message.split("\n")[0][:200]


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


# --- the run's life: the vessl SDK, imported only here ----------------------------------------------------------

PLACEHOLDER_REPO = "github.com/your-org/"
CONFIG_NAMES = ("VESSL_ACCESS_TOKEN", "VESSL_DEFAULT_ORGANIZATION", "VESSL_DEFAULT_PROJECT")
_STATES = {"pending": RunState.PENDING, "queued": RunState.PENDING, "idle": RunState.PENDING,
           "initializing": RunState.PENDING,
           "running": RunState.RUNNING, "terminating": RunState.STOPPING, "completed": RunState.FINISHED,
           "failed": RunState.FAILED, "stopped": RunState.STOPPED, "terminated": RunState.STOPPED}
LOG_POLL_SECONDS = 3.0
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_TIME_PREFIX = re.compile(r"^\[[0-9: -]+\] *", re.MULTILINE)


class VesslHandle(Handle):
    vessl_run: int  # the run's id on VESSL
    organization_name: str
    project_name: str
    url: Optional[str] = None  # its page on VESSL's web app

    def where(self) -> Optional[str]:
        return self.url

    def location(self) -> dict:
        """The organization and project every call about the run names."""
        return {"organization_name": self.organization_name, "project_name": self.project_name}


HANDLE = VesslHandle


def launch(plan: LaunchPlan, document: str, secrets, record) -> VesslHandle:
    """`vessl.create_run` with the rendered body. Inline secret values exist only in that in-memory body; the
    run's VESSL id, organization and project are its handle, so status, logs and stop find it later."""
    from launcher.secrets import ResolvedSecrets

    if not isinstance(secrets, ResolvedSecrets):
        raise TypeError("a launch needs resolved secrets, never the masked ones")
    if plan.recipe.code.repo.startswith(PLACEHOLDER_REPO):
        raise LaunchError(f"{plan.loaded.relpath}: code.repo: VESSL clones the code from git; set it to your "
                          f"repository (now {plan.recipe.code.repo!r})")
    vessl, config = _signed_in(Path(record.project))
    where = _launch_location(vessl, config)
    printed = io.StringIO()  # the SDK prints progress and its own errors; keep the user's terminal to ours
    with _vessl_errors("create_run", secrets), contextlib.redirect_stdout(printed):
        created = vessl.create_run(yaml_file=None, yaml_body=document, yaml_file_name=f"{plan.run_id}.yaml",
                                   quiet=True, **where)
    if created is None:  # the SDK's own YAML check failed (e.g. an unknown cluster) and it printed why
        said = [line for line in _TIME_PREFIX.sub("", _COLOURS.sub("", printed.getvalue())).splitlines()
                if line.strip()]
        raise LaunchError(f"VESSL refused the run: {_mask(said[-1] if said else 'no reason given', secrets)}")
    return VesslHandle(vessl_run=created.id, **where, url=_web_url(created.id, where))


def status(record) -> RunStatus:
    vessl, _ = _signed_in(Path(record.project))
    return RunStatus(state=_state(vessl, record))


def logs(record, follow: bool):
    """The run's log lines; with `follow`, polled until the run has ended (the state is read before each fetch,
    so the last fetch after the end still returns the final lines)."""
    vessl, _ = _signed_in(Path(record.project))
    after = 0.0
    while True:
        ended = not follow or _state(vessl, record).is_terminal
        with _vessl_errors("list_run_logs"):
            handle = VesslHandle.of(record)
            entries = vessl.list_run_logs(handle.vessl_run, tail=-1, after=after, **handle.location())
        for entry in entries:
            yield _unescape(entry.message or "").rstrip("\n") + "\n"
        if entries:
            after = entries[-1].timestamp + 1e-6
        if ended:
            return
        time.sleep(LOG_POLL_SECONDS)


def stop(record) -> RunState:
    """`terminate_run`: VESSL deletes the run's pod, whose container gets SIGTERM and the cluster's grace period
    before SIGKILL; the trainer finishes its step and checkpoints on SIGTERM."""
    vessl, _ = _signed_in(Path(record.project))
    with _vessl_errors("terminate_run"):
        handle = VesslHandle.of(record)
        vessl.terminate_run(handle.vessl_run, **handle.location())
    return RunState.STOPPED


def _state(vessl, record) -> RunState:
    with _vessl_errors("read_run"):
        handle = VesslHandle.of(record)
        raw = str(vessl.read_run(handle.vessl_run, **handle.location()).status or "unknown").lower()
    return _STATES.get(raw, RunState.UNKNOWN)


def _web_url(vessl_run: int, where: dict) -> str:
    from vessl.util.constant import WEB_HOST

    return f"{WEB_HOST}/{where['organization_name']}/runs/{where['project_name']}/{vessl_run}"


@lru_cache(maxsize=None)
def _signed_in(project_dir: Path):
    """(the vessl SDK signed in, the VESSL_* configuration), once per process: `launch status` over many VESSL
    runs signs in once. The token is VESSL_ACCESS_TOKEN from the environment or the project's `.env`, else what
    `vessl configure` saved in ~/.vessl/config (read, never written)."""
    from launcher.secrets import resolve_secrets

    config = resolve_secrets(CONFIG_NAMES, project_dir, required=False).as_dict()
    with _vessl_errors("sign-in"):
        try:
            import vessl  # signs in at import when VESSL_ACCESS_TOKEN is exported
        except ImportError:
            raise LaunchError("the vessl SDK is not installed: `pip install -e '.[vessl]'`, then set "
                              f"{', '.join(CONFIG_NAMES)} (or run `vessl configure`)") from None
        _configured(lambda: vessl.vessl_api.set_access_token(access_token=config.get("VESSL_ACCESS_TOKEN"),
                                                             no_prompt=True))
    return vessl, config


def _launch_location(vessl, config: dict) -> dict:
    """The organization and project a new run goes to (VESSL_DEFAULT_ORGANIZATION, VESSL_DEFAULT_PROJECT, else
    ~/.vessl/config), made the SDK's defaults for this process: `create_run` reads the run back through them."""
    api = vessl.vessl_api
    with _vessl_errors("sign-in"):
        organization = _configured(lambda: api.set_organization(config.get("VESSL_DEFAULT_ORGANIZATION")))
        project = _configured(lambda: api.set_project(config.get("VESSL_DEFAULT_PROJECT")))
    if project is None:
        raise LaunchError(f"VESSL is not configured: organization {organization} has no project: create one, "
                          f"then set VESSL_DEFAULT_PROJECT")
    return {"organization_name": organization, "project_name": project}


def _configured(sign_in_step):
    """A sign-in step; what the SDK raises when the token, organization or project is missing or wrong is a
    configuration problem, said as one."""
    from vessl.util.exception import VesslException

    try:
        return sign_in_step()
    except VesslException as exc:
        raise LaunchError(f"VESSL is not configured: {str(exc.message).rstrip('.')}: set "
                          f"{', '.join(CONFIG_NAMES)} (environment or .env), or run `vessl configure`") from None


@contextlib.contextmanager
def _vessl_errors(call: str, secrets=None):
    """One line for whatever VESSL or the network raises, with no secret value in it."""
    try:
        yield
    except LaunchError:
        raise
    except Exception as exc:
        reason = _vessl_reason(exc)
        if reason is None:  # not VESSL's nor the network's: a bug, shown with its traceback
            raise
        raise LaunchError(f"VESSL {call} failed: {_mask(reason, secrets)}") from None


def _vessl_reason(exc: Exception) -> Optional[str]:
    """The SDK's own message for API errors; for the transport (urllib3: refused, reset, DNS) its class name."""
    import urllib3
    from vessl.util.exception import VesslException

    if isinstance(exc, VesslException):
        return str(exc.message).splitlines()[0] if exc.message else type(exc).__name__
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return f"cannot reach the VESSL API ({type(exc).__name__})"
    return None


def _mask(text: str, secrets) -> str:
    from launcher.secrets import mask_text

    return mask_text(text, secrets.as_dict().values() if secrets is not None else ())


def _unescape(message: str) -> str:
    """VESSL's log API returns control characters escaped, as the vessl CLI's own printer undoes."""
    return message.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t")
