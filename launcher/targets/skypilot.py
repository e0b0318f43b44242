"""SkyPilot: a managed spot job. Secrets appear by name only; their values travel in memory at launch."""

from __future__ import annotations

import os
import time

import yaml

from launcher import job_contract
from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.render import job_env, render_template, run_script
from launcher.schema import ACCELERATORS, RECOVERY_STRATEGIES

TEMPLATE = "skypilot.yaml.j2"
_JOB_RECOVERY_KEYS = {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"}


def render(plan: LaunchPlan, secrets) -> str:
    """The task YAML. `secrets` is unused on purpose: SkyPilot receives values through its API, not the file."""
    r = plan.recipe
    missing = [name for name, v in r.volumes.items() if v.skypilot is None]
    if missing:
        raise LaunchError(f"{plan.loaded.relpath}: volumes.{missing[0]}.skypilot: no bucket backs this volume "
                          f"on SkyPilot (expected an s3:// or gs:// URI)")
    return render_template(
        TEMPLATE,
        recipe_file=plan.loaded.relpath,
        name=r.name,
        accelerators=f"{r.resources.accelerator}:{r.resources.gpus}",
        use_spot=r.resources.spot,
        disk_size=r.resources.disk_gb,
        image_id=f"docker:{r.image}",
        job_recovery={
            "strategy": r.resources.recovery.strategy,
            "max_restarts_on_errors": r.resources.recovery.max_restarts_on_errors,
            "recover_on_exit_codes": [job_contract.PREEMPTED_EXIT_CODE],
        },
        num_nodes=r.resources.nodes,
        file_mounts={v.mount: {"source": v.skypilot, "mode": "MOUNT" if v.read_only else "MOUNT_CACHED"}
                     for v in r.volumes.values()},
        envs=job_env(plan),
        secrets={name: None for name in r.secrets},
        setup=r.setup,
        run=run_script(plan, rendezvous="skypilot"),
    )


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
    accelerator = str(resources.get("accelerators", "")).split(":")[0]
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

_TERMINAL = {"SUCCEEDED": "finished", "CANCELLED": "stopped", "FAILED": "failed", "FAILED_SETUP": "failed",
             "FAILED_PRECHECKS": "failed", "FAILED_NO_RESOURCE": "failed", "FAILED_CONTROLLER": "failed"}
STOP_GRACE_SECONDS = 300


def _sky():
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    import sky

    return sky


def launch(plan: LaunchPlan, secrets, project_dir):
    """A managed job from the validated task; secret values go in through SkyPilot's secrets, in memory."""
    from launcher.registry import Registry, RunRecord
    from launcher.secrets import ResolvedSecrets

    if not isinstance(secrets, ResolvedSecrets):
        raise TypeError("a launch needs resolved secrets, never the masked ones")
    document = render(plan, secrets)
    validate(document)
    sky = _sky()
    task = sky.Task.from_yaml_config(yaml.safe_load(document))
    task.update_secrets(secrets.as_dict())
    job_ids, _ = sky.stream_and_get(sky.jobs.launch(task, name=plan.run_id))
    checkpoint = plan.recipe.train.checkpoint
    record = RunRecord(run_id=plan.run_id, recipe=plan.loaded.name, target="skypilot", state="running",
                       started=time.time(), store=checkpoint.uri, local_dir=checkpoint.local_dir,
                       tracking_uri=plan.recipe.mlflow.tracking_uri or "", handle={"job_id": job_ids[0]})
    Registry(project_dir).save(record)
    return record


def status(registry, record) -> dict:
    sky = _sky()
    jobs = sky.get(sky.jobs.queue(refresh=False, job_ids=[record.handle["job_id"]]))
    if not jobs:
        return {"state": record.state, "step": "-"}
    job = jobs[0]
    raw = str(getattr(job, "status", None) or job["status"]).split(".")[-1]
    recoveries = getattr(job, "recovery_count", None)
    if recoveries is not None and recoveries != record.restarts:
        registry.update(record.run_id, restarts=recoveries)
    return {"state": _TERMINAL.get(raw, raw.lower()), "step": "-"}


def logs(registry, record, follow: bool):
    sky = _sky()
    for line in sky.jobs.tail_logs(job_id=record.handle["job_id"], follow=follow, preload_content=False) or []:
        if line is not None:
            yield line


def stop(registry, record) -> str:
    """Graceful cancel: the job gets SIGTERM, checkpoints and exits; SkyPilot kills it after the grace."""
    sky = _sky()
    sky.stream_and_get(sky.jobs.cancel(job_ids=[record.handle["job_id"]], graceful=True,
                                       graceful_timeout=STOP_GRACE_SECONDS))
    registry.update(record.run_id, state="stopped", ended=time.time())
    return "stopped"
