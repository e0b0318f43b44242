"""SkyPilot: a managed spot job. Secrets appear by name only; their values travel in memory at launch."""

from __future__ import annotations

import os

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
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    import sky  # ~1.5 s: only when a SkyPilot document is really checked

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
