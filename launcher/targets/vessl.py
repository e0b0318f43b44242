"""VESSL: a run on a cluster preset. Code is cloned from git, volumes imported or mounted by `volume://`.

Secrets default to VESSL's own stored secrets (`{secret: NAME}`: no value anywhere). A recipe with
`secrets_mode: inline` gets the values from `.env` instead, written only into the document handed to VESSL
at launch; the display render shows the mask.
"""

from __future__ import annotations

import json
import shlex
from functools import lru_cache
from pathlib import Path

import yaml

from launcher.errors import LaunchError
from launcher.plan import LaunchPlan
from launcher.render import job_env, render_template, run_script

TEMPLATE = "vessl.yaml.j2"
SCHEMA_FILE = Path(__file__).with_name("vessl_run.schema.json")


def render(plan: LaunchPlan, secrets) -> str:
    r = plan.recipe
    where = plan.loaded.relpath
    if r.resources.vessl is None:
        raise LaunchError(f"{where}: resources.vessl: VESSL needs a cluster and preset "
                          f"(e.g. {{cluster: vessl-gcp-oregon, preset: gpu-a100-large-spot}})")
    if r.resources.nodes > 1:
        raise LaunchError(f"{where}: resources.nodes: VESSL runs are single-node here, got {r.resources.nodes} "
                          f"(use --target skypilot for multi-node)")
    missing = [name for name, v in r.volumes.items() if v.vessl is None]
    if missing:
        raise LaunchError(f"{where}: volumes.{missing[0]}.vessl: no source backs this volume on VESSL "
                          f"(expected e.g. volume://NAME)")

    env = job_env(plan)
    for name in r.secrets:
        env[name] = {"secret": name} if r.secrets_mode == "platform" else secrets.value(name)
    checkout = [f"git checkout {shlex.quote(r.code.ref)}"] if r.code.ref else []
    return render_template(
        TEMPLATE,
        recipe_file=where,
        name=r.name,
        description=r.description or f"{r.pipeline} stage from {where}",
        tags=[r.pipeline, r.resources.accelerator, f"gpus-{r.resources.gpus}", plan.run_id],
        cluster=r.resources.vessl.cluster,
        preset=r.resources.vessl.preset,
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


# --- submission: the vessl CLI, reading the document from a private file -------------------------------------

PLACEHOLDER_REPO = "github.com/your-org/"


def launch(plan: LaunchPlan, secrets, project_dir):
    """`vessl run create -f FILE`. With `secrets_mode: inline` the values are in FILE: it is created readable
    by this user only (0600) and removed as soon as the CLI returns, whatever happened."""
    import os
    import shutil
    import subprocess
    import tempfile
    import time

    from launcher.registry import Registry, RunRecord
    from launcher.secrets import MASK, ResolvedSecrets

    if not isinstance(secrets, ResolvedSecrets):
        raise TypeError("a launch needs resolved secrets, never the masked ones")
    if plan.recipe.code.repo.startswith(PLACEHOLDER_REPO):
        raise LaunchError(f"{plan.loaded.relpath}: code.repo: VESSL clones the code from git; set it to your "
                          f"repository (now {plan.recipe.code.repo!r})")
    cli = shutil.which("vessl")
    if cli is None:
        raise LaunchError("the vessl CLI is not installed: `pip install -e '.[vessl]'`, then `vessl configure` "
                          "(or set VESSL_ACCESS_TOKEN, VESSL_DEFAULT_ORGANIZATION, VESSL_DEFAULT_PROJECT)")
    document = render(plan, secrets)
    validate(document)
    descriptor, path = tempfile.mkstemp(prefix="vessl-run-", suffix=".yaml")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as out:
            out.write(document)
        result = subprocess.run([cli, "run", "create", "-f", path], capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(path)
    output = (result.stdout + result.stderr).strip()
    for value in secrets.as_dict().values():
        output = output.replace(value, MASK) if value else output
    if result.returncode != 0:
        raise LaunchError(f"vessl run create failed: {output.splitlines()[-1] if output else result.returncode}")
    checkpoint = plan.recipe.train.checkpoint
    record = RunRecord(run_id=plan.run_id, recipe=plan.loaded.name, target="vessl", state="running",
                       started=time.time(), store=checkpoint.uri, local_dir=checkpoint.local_dir,
                       tracking_uri=plan.recipe.mlflow.tracking_uri or "", handle={"vessl_output": output[-2000:]})
    Registry(project_dir).save(record)
    return record


def status(registry, record) -> dict:
    """Submitted runs are not followed on VESSL in this version: the record says only that it was submitted."""
    return {"state": "submitted", "step": "-"}


def logs(registry, record, follow: bool):
    raise LaunchError(f"run {record.run_id}: following VESSL runs is not available in this version: "
                      f"use `vessl run logs`")


def stop(registry, record) -> str:
    raise LaunchError(f"run {record.run_id}: stopping VESSL runs is not available in this version: "
                      f"use `vessl run terminate`")
