"""SkyPilot: a managed spot job. Secrets appear by name only; their values travel in memory at launch."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

import yaml

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan, cluster_summary
from launcher.render import job_env, render_template, run_script
from launcher.secrets import mask_text
from launcher.targets import Handle, RunStatus
from spottrain_contract.job import PREEMPTED_EXIT_CODE, RunState
from spottrain_contract.schema import ACCELERATORS, RECOVERY_STRATEGIES

RUNS_HERE = False
DEFAULT_PROFILE = None
TEMPLATE = "skypilot.yaml.j2"
_JOB_RECOVERY_KEYS = {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"}


def unsupported(recipe) -> Optional[str]:
    missing = [name for name, v in recipe.volumes.items() if v.skypilot is None]
    if missing:
        return (f"volumes.{missing[0]}.skypilot: no bucket backs this volume on SkyPilot "
                f"(expected an s3:// or gs:// URI)")
    return None


def describe(recipe) -> str:
    return cluster_summary(recipe)


def secret_names(recipe) -> list[str]:
    return list(recipe.secrets)


def preflight(recipe, project_dir) -> list:
    """SkyPilot's own `sky check`, in a subprocess (the CLI never imports sky for it): some infra enabled. `sky check`
    starts SkyPilot's local API server when none runs (half a minute): a row then says so, and how to stop it."""
    import re
    import subprocess
    import sys

    from launcher.targets import Check

    sky = [str(Path(sys.executable).with_name("sky"))] if Path(sys.executable).with_name("sky").exists() else ["sky"]
    try:
        done = subprocess.run([*sky, "check"], capture_output=True, text=True, timeout=180,
                              env={**os.environ, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("SkyPilot", False, f"`sky check` did not run ({type(exc).__name__}): is skypilot installed?")]
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    started = [Check("SkyPilot API server", True, "started for this check, and left running: `sky api stop` stops "
                                                   "it")] if "SkyPilot API server started" in text else []
    enabled = text.split("Enabled infra", 1)[1].strip().splitlines()[1:] if "Enabled infra" in text else []
    enabled = [line.strip() for line in enabled if line.startswith("  ") and line.strip()]
    if done.returncode != 0 or not enabled or enabled[0].startswith("No infra"):
        return [*started, Check("SkyPilot", False, "no cloud enabled: run `sky check` and follow its hint for the "
                                                   "cloud that should run this recipe")]
    return [*started, Check("SkyPilot", True, f"enabled: {', '.join(enabled)}")]


def render(plan: LaunchPlan, secrets) -> str:
    """The task YAML. `secrets` is unused on purpose: SkyPilot receives values through its API, not the file."""
    r = plan.recipe
    problem = unsupported(r)
    if problem:
        raise LaunchError(f"{plan.loaded.relpath}: {problem}")
    return render_template(
        TEMPLATE,
        recipe_file=plan.loaded.relpath,
        name=r.name,
        accelerators=_accelerators(r.resources),
        use_spot=r.resources.spot,
        disk_size=r.resources.disk_gb,
        image_id=f"docker:{r.image}",
        job_recovery={
            "strategy": r.resources.recovery.strategy,
            "max_restarts_on_errors": r.resources.recovery.max_restarts_on_errors,
            "recover_on_exit_codes": [PREEMPTED_EXIT_CODE],
        },
        num_nodes=r.resources.nodes,
        file_mounts={v.mount: {"source": v.skypilot, "mode": "MOUNT" if v.read_only else "MOUNT_CACHED"}
                     for v in r.volumes.values()},
        envs=job_env(plan),
        secrets={name: None for name in r.secrets},
        setup=r.setup,
        run=run_script(plan, rendezvous="skypilot"),
    )


def _accelerators(resources):
    """`A100-80GB:4`, or SkyPilot's ordered list of candidates (`[A100-80GB:4, A100:4, A100-80GB:2]`: tried in
    order at launch and at every recovery) where the recipe accepts several types or counts."""
    candidates = resources.candidates
    return candidates[0] if len(candidates) == 1 else candidates


def validate(document: str) -> None:
    config = yaml.safe_load(document)
    _check_what_skypilot_does_not(config)
    sky = _sky()  # ~1.5 s: only when a SkyPilot document is really checked
    try:
        sky.Task.from_yaml_config(config)
    except Exception as exc:  # SkyPilot raises ValueError, jsonschema errors and its own exception types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LaunchError(f"SkyPilot rejects the rendered task: {first_line}") from None


def _check_what_skypilot_does_not(config: dict) -> None:
    """SkyPilot's client-side schema accepts any accelerator string and any job_recovery key."""
    resources = config.get("resources") or {}
    accelerators = resources.get("accelerators", "")
    for candidate in accelerators if isinstance(accelerators, list) else [accelerators]:
        accelerator = str(candidate).split(":")[0]
        if accelerator not in ACCELERATORS:
            raise LaunchError(f"skypilot task: resources.accelerators: unknown accelerator {accelerator!r}")
    recovery = resources.get("job_recovery") or {}
    unknown = set(recovery) - _JOB_RECOVERY_KEYS
    if unknown:
        raise LaunchError(f"skypilot task: resources.job_recovery: unknown key {sorted(unknown)[0]!r}")
    if recovery.get("strategy") not in RECOVERY_STRATEGIES:
        raise LaunchError(f"skypilot task: resources.job_recovery.strategy: unknown strategy "
                          f"{recovery.get('strategy')!r}")


# --- the job's life: SkyPilot's Python API, imported only here -----------------------------------------------

_STATES = {"PENDING": RunState.PENDING, "SUBMITTED": RunState.PENDING, "STARTING": RunState.PENDING,
           "RUNNING": RunState.RUNNING, "RECOVERING": RunState.RESTARTING, "CANCELLING": RunState.STOPPING,
           "SUCCEEDED": RunState.FINISHED, "CANCELLED": RunState.STOPPED, "FAILED": RunState.FAILED,
           "FAILED_SETUP": RunState.FAILED, "FAILED_PRECHECKS": RunState.FAILED,
           "FAILED_NO_RESOURCE": RunState.FAILED, "FAILED_CONTROLLER": RunState.FAILED}
STOP_GRACE_SECONDS = 300


def _sky():
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    import sky

    return sky


class SkyPilotHandle(Handle):
    job_id: int  # the managed job's id
    cloud: Optional[str] = None  # where SkyPilot placed the job last, as its job queue says (what prices the run)
    region: Optional[str] = None

    def where(self) -> str:
        return f"managed job {self.job_id}"


HANDLE = SkyPilotHandle


def launch(plan: LaunchPlan, document: str, secrets, record) -> SkyPilotHandle:
    """A managed job from the validated task; secret values go in through SkyPilot's secrets, in memory."""
    from launcher.secrets import ResolvedSecrets

    if not isinstance(secrets, ResolvedSecrets):
        raise TypeError("a launch needs resolved secrets, never the masked ones")
    sky = _sky()
    task = sky.Task.from_yaml_config(yaml.safe_load(document))
    task.update_secrets(secrets.as_dict())
    with _sky_errors("launch", secrets):
        job_ids, _ = sky.stream_and_get(sky.jobs.launch(task, name=plan.run_id))
    return SkyPilotHandle(job_id=job_ids[0])


def status(record) -> RunStatus:
    sky = _sky()
    with _sky_errors("status"):  # one line, so a list of runs shows this one as unknown instead of failing
        jobs = sky.get(sky.jobs.queue(refresh=False, job_ids=[SkyPilotHandle.of(record).job_id]))
    if not jobs:
        return RunStatus(state=record.state)
    job = jobs[0]
    raw = str(getattr(job, "status", None) or job["status"]).split(".")[-1]
    placed = {key: str(value) for key in ("cloud", "region") if (value := _field(job, key))}
    return RunStatus(state=_STATES.get(raw, RunState.UNKNOWN), restarts=getattr(job, "recovery_count", None),
                     handle=placed or None)


def _field(job, key: str):
    """A field of a job queue entry: SkyPilot's record object, or a plain mapping."""
    return getattr(job, key, None) if not isinstance(job, dict) else job.get(key)


def logs(record, follow: bool):
    sky = _sky()
    with _sky_errors("logs"):
        for line in sky.jobs.tail_logs(job_id=SkyPilotHandle.of(record).job_id, follow=follow,
                                       preload_content=False) or []:
            if line is not None:
                yield line


def stop(record) -> RunState:
    """Graceful cancel: the job gets SIGTERM, checkpoints and exits; SkyPilot kills it after the grace."""
    sky = _sky()
    with _sky_errors("stop"):
        sky.stream_and_get(sky.jobs.cancel(job_ids=[SkyPilotHandle.of(record).job_id], graceful=True,
                                           graceful_timeout=STOP_GRACE_SECONDS))
    return RunState.STOPPED


@contextlib.contextmanager
def _sky_errors(call: str, secrets=None) -> Iterator[None]:
    """One line for what SkyPilot or the network raises (its API server out of reach, a cloud's refusal, no
    capacity, bad credentials), with no secret value in it; anything else is a bug, shown with its traceback."""
    import requests

    sky = _sky()
    try:
        yield
    except LaunchError:
        raise
    except Exception as exc:
        if not isinstance(exc, (sky.exceptions.ApiServerConnectionError, sky.exceptions.ApiServerAuthenticationError,
                                sky.exceptions.CloudError, sky.exceptions.ResourcesUnavailableError,
                                sky.exceptions.InvalidCloudCredentials, requests.exceptions.RequestException)):
            raise
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        values = secrets.as_dict().values() if secrets is not None else ()
        raise LaunchError(f"SkyPilot: {call} failed: {mask_text(said, values)}") from None
