"""The `launch` command. Thin: parse, call the core, print. Heavy imports happen inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from launcher.errors import LaunchError

TARGET_NAMES = ("skypilot", "vessl", "local")
DEFAULT_PROFILES = {"local": "local"}  # --target local runs the recipe's local profile unless told otherwise


def _project_dir() -> Path:
    from launcher.recipes import find_project_dir

    return find_project_dir()


def _sizing_options(command):
    command = click.option("--override", "overrides", multiple=True, metavar="KEY=VALUE",
                           help="Dotted override, e.g. train.optim.lr=5e-5 (repeatable).")(command)
    command = click.option("--profile", default=None, help="Apply a profile of the recipe, e.g. local.")(command)
    command = click.option("--nodes", type=click.IntRange(1, 64), default=None, help="Nodes (default: recipe).")(
        command)
    command = click.option("--gpus", type=click.IntRange(1, 8), default=None, help="GPUs per node (default: recipe).")(
        command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Launch training recipes on SkyPilot, VESSL or this machine."""


@cli.command("list")
def list_recipes():
    """Table of the recipes: pipeline, GPUs, nodes, spot, targets they render for."""
    from launcher.catalog import recipe_table

    click.echo(recipe_table(_project_dir()))


@cli.command()
@click.argument("name")
@click.option("--target", type=click.Choice(TARGET_NAMES), default="skypilot", show_default=True)
@_sizing_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the document to FILE instead of standard output.")
def render(name, target, gpus, nodes, profile, overrides, output):
    """Print the document a launch of NAME would submit (secrets masked)."""
    from launcher.display import render_for_display

    plan, document = render_for_display(name, target=target, project_dir=_project_dir(), gpus=gpus, nodes=nodes,
                                        profile=profile, overrides=overrides)
    click.echo(plan.summary(), err=True)
    if output:
        try:
            Path(output).write_text(document)
        except OSError as exc:
            raise LaunchError(f"{output}: cannot write: {exc.strerror or exc}") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(document, nl=False)


@cli.command()
@click.option("--target", "targets", type=click.Choice(TARGET_NAMES), multiple=True,
              help="Check only these targets (default: all).")
def check(targets):
    """Render and validate every recipe × target × profile, offline. Non-zero exit on any failure."""
    from launcher.catalog import check_all

    results = check_all(_project_dir(), targets or TARGET_NAMES)
    for result in results:
        click.echo(result.line())
    failed = [r for r in results if not r.ok]
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("name")
@click.option("--target", type=click.Choice(TARGET_NAMES), default="skypilot", show_default=True)
@_sizing_options
@click.option("--run-id", default=None, help="Continue this run (default: a new run id).")
@click.option("--dry-run", is_flag=True, help="Print what would be submitted (secrets masked) and stop.")
@click.option("--detach", is_flag=True, help="Local target: start in the background and return.")
@click.option("--chaos", default=None, metavar="SPEC",
              help="Local target: kill the job at random moments of its training, e.g. "
                   "kills=5,signals=KILL+TERM,every=1:4,seed=1 (every: seconds of training before each kill).")
def recipe(name, target, gpus, nodes, profile, overrides, run_id, dry_run, detach, chaos):
    """Launch the recipe NAME on a target."""
    from launcher.display import render_for_display

    project_dir = _project_dir()
    plan, document = render_for_display(name, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                                        profile=profile or DEFAULT_PROFILES.get(target), overrides=overrides,
                                        run_id=run_id, stages="resolve" if dry_run else "require")
    click.echo(plan.summary())
    if dry_run:
        click.echo("---")
        click.echo(document, nl=False)
        return
    _submit(plan, project_dir, detach=detach, chaos=chaos)


@cli.command()
@click.argument("name")
@click.option("--target", type=click.Choice(TARGET_NAMES), default="skypilot", show_default=True)
@_sizing_options
def pipeline(name, target, gpus, nodes, profile, overrides):
    """Launch every stage of the pipeline NAME (recipes/_pipelines.yaml) in order, each after the last."""
    from launcher.display import render_for_display
    from launcher.stages import pipeline_stages

    project_dir = _project_dir()
    stage_runs: dict[str, str] = {}
    for stage in pipeline_stages(project_dir, name):
        plan, _ = render_for_display(stage, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                                     profile=profile or DEFAULT_PROFILES.get(target), overrides=overrides,
                                     stages="require", stage_runs=stage_runs)
        click.echo(f"== {name}: stage {stage}")
        click.echo(plan.summary())
        _submit(plan, project_dir)
        if target != "local":
            _wait_until_finished(project_dir, plan.run_id)
        stage_runs[stage] = plan.run_id


def _wait_until_finished(project_dir: Path, run_id: str, poll_seconds: float = 30.0) -> None:
    """Sequential launches on a platform: the next stage may need this one's best checkpoint."""
    import time

    from launcher.registry import Registry
    from launcher.targets import get_target

    registry = Registry(project_dir)
    while True:
        record = registry.get(run_id)
        state = get_target(record.target).status(registry, record)["state"]
        if state == "finished":
            return
        if state in ("failed", "stopped"):
            raise LaunchError(f"stage run {run_id} {state}: the pipeline stops here (launch logs {run_id})")
        time.sleep(poll_seconds)


def _submit_to_platform(plan, project_dir: Path) -> None:
    from launcher.secrets import resolve_secrets
    from launcher.targets import skypilot, vessl

    if plan.target == "vessl":
        needed = plan.recipe.secrets if plan.recipe.secrets_mode == "inline" else []
        record = vessl.launch(plan, resolve_secrets(needed, project_dir), project_dir)
        click.echo(f"submitted VESSL run {record.handle['vessl_run']} as run {record.run_id}: {record.handle['url']}")
    else:
        record = skypilot.launch(plan, resolve_secrets(plan.recipe.secrets, project_dir), project_dir)
        click.echo(f"submitted managed job {record.handle['job_id']} as run {record.run_id}")
    click.echo(f"  launch status {record.run_id}    launch logs {record.run_id} --follow    "
               f"launch stop {record.run_id}")


def _submit(plan, project_dir: Path, *, detach: bool = False, chaos=None) -> None:
    from launcher.registry import Registry
    from launcher.secrets import resolve_secrets
    from launcher.targets import local

    if plan.target != "local":
        _submit_to_platform(plan, project_dir)
        return
    secrets = resolve_secrets(plan.recipe.secrets, project_dir, required=False)
    record = local.launch(plan, secrets, project_dir, chaos=chaos)
    click.echo(f"launched {record.run_id} (log {record.log})")
    if detach:
        click.echo(f"  follow it: launch logs {record.run_id} --follow    stop it: launch stop {record.run_id}")
        return
    registry = Registry(project_dir)
    try:
        for line in local.logs(registry, record, follow=True):
            click.echo(line, nl=False)
    except KeyboardInterrupt:
        click.echo(f"stopping {record.run_id}: the job checkpoints first", err=True)
        click.echo(f"run {record.run_id} {local.stop(registry, record)}", err=True)
        sys.exit(130)
    final = local.status(registry, registry.get(record.run_id))
    click.echo(f"run {record.run_id} {final['state']} at step {final['step']}")
    click.echo(f"  checkpoints  {record.store}/{record.run_id}  (final weights in final-hf/)")
    click.echo(f"  metrics      mlflow ui --backend-store-uri {record.tracking_uri}")
    click.echo(f"  resume       launch recipe {record.recipe} --target local --run-id {record.run_id}")
    if final["state"] == "failed":
        sys.exit(1)


@cli.command()
@click.argument("run_id", required=False)
def status(run_id):
    """Table of launched runs (or one): recipe, target, state, step, restarts, age."""
    from launcher.registry import Registry, age
    from launcher.tables import table_lines
    from launcher.targets import get_target

    registry = Registry(_project_dir())
    records = [registry.get(run_id)] if run_id else registry.all()
    rows, unreachable = [], []
    for record in records:
        try:
            now = get_target(record.target).status(registry, record)
        except LaunchError as exc:
            if run_id:
                raise
            # one platform out of reach (no credentials, no network) must not hide the runs of the others
            now = {"state": "unknown", "step": "-"}
            unreachable.append(f"warning: {record.run_id}: {exc}")
        rows.append((record.run_id, record.recipe, record.target, now["state"], now["step"], str(record.restarts),
                     age(record.started)))
    header = ("RUN", "RECIPE", "TARGET", "STATE", "STEP", "RESTARTS", "AGE")
    click.echo("\n".join(table_lines(header, rows)))
    for line in unreachable:
        click.echo(line, err=True)


@cli.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
def logs(run_id, follow):
    """Print the log of a launched run."""
    from launcher.registry import Registry
    from launcher.targets import get_target

    registry = Registry(_project_dir())
    record = registry.get(run_id)
    for line in get_target(record.target).logs(registry, record, follow):
        click.echo(line, nl=False)


@cli.command()
@click.argument("run_id")
def stop(run_id):
    """Stop a run gracefully: it checkpoints, then exits (killed only after a grace period)."""
    from launcher.registry import Registry
    from launcher.targets import get_target

    registry = Registry(_project_dir())
    record = registry.get(run_id)
    click.echo(f"run {run_id} {get_target(record.target).stop(registry, record)}")


@cli.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Overlay their loss curves in FILE.png.")
def compare(run_a, run_b, plot):
    """Config diff (flattened params from MLflow) and final metrics of two runs, side by side."""
    from launcher.compare import compare as compare_runs
    from launcher.registry import Registry

    click.echo(compare_runs(Registry(_project_dir()), run_a, run_b, Path(plot) if plot else None))


def main():
    try:
        cli.main(standalone_mode=False)
    except LaunchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors too: one line, like every other error
        hint = f" (see {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
        click.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
        sys.exit(2)
