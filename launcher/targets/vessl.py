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
