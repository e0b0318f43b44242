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
def recipe(name, target, gpus, nodes, profile, overrides, run_id, dry_run):
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
    _submit(plan, project_dir)


@cli.command()
@click.argument("name")
@click.option("--target", type=click.Choice(TARGET_NAMES), default="skypilot", show_default=True)
@_sizing_options
def pipeline(name, target, gpus, nodes, profile, overrides):
    """Launch every stage of the pipeline NAME (recipes/_pipelines.yaml) in order, each after the last."""
    from launcher.display import render_for_display
    from launcher.stages import pipeline_stages

    project_dir = _project_dir()
    for stage in pipeline_stages(project_dir, name):
        plan, _ = render_for_display(stage, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                                     profile=profile or DEFAULT_PROFILES.get(target), overrides=overrides,
                                     stages="require")
        click.echo(f"== {name}: stage {stage}")
        click.echo(plan.summary())
        _submit(plan, project_dir)


def _submit(plan, project_dir: Path) -> None:
    if plan.target != "local":
        raise LaunchError(f"submitting to {plan.target} is not available in this version: use --dry-run, or hand "
                          f"the document from `launch render {plan.loaded.name} --target {plan.target}` to the "
                          f"platform's CLI")
    _launch_local(plan, project_dir)


def _launch_local(plan, project_dir: Path) -> None:
    from launcher import job_contract
    from launcher.secrets import resolve_secrets
    from launcher.targets import local

    secrets = resolve_secrets(plan.recipe.secrets, project_dir, required=False)
    attempts = local.launch(plan, secrets, project_dir, on_attempt=lambda a: click.echo(
        f"attempt {a.number} exited {a.exit_code} after {a.seconds:.0f} s"
        + (" (preempted: resuming)" if a.exit_code == job_contract.PREEMPTED_EXIT_CODE else ""), err=True))
    checkpoint = plan.recipe.train.checkpoint
    tracking = job_contract.mlflow_tracking_uri(plan.recipe.mlflow.tracking_uri, checkpoint.local_dir)
    click.echo(f"run {plan.run_id} finished after {len(attempts)} attempt(s)")
    click.echo(f"  checkpoints  {checkpoint.uri}/{plan.run_id}  (final weights in final-hf/)")
    click.echo(f"  metrics      mlflow ui --backend-store-uri {tracking}")


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
