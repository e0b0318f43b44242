"""The `launch` command. Thin: parse, call the core, print. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState

DEFAULT_TARGET = "skypilot"
TARGET_HELP = "Where it runs: skypilot, vessl, local, or a target another package registers."


def _project_dir() -> Path:
    from spottrain_contract.recipe import find_project_dir

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


def _print_version(ctx, _param, value) -> None:
    """`launch --version`: the installed package's version and the commit of the checkout it runs from."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from launcher.plan import code_version

    code = code_version(Path(__file__).resolve().parent.parent)
    click.echo(f"launch {version('spottrain')} (" + (f"commit {code}" if code else "not run from a git checkout") + ")")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and the commit it was built from, then exit.")
def cli():
    """Launch training recipes on SkyPilot, VESSL or this machine."""


def _complete_recipes(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of recipe names (bash, zsh, fish: see the README)."""
    from spottrain_contract.recipe import find_project_dir, recipe_names

    try:
        return [name for name in recipe_names(find_project_dir()) if name.startswith(incomplete)]
    except UserError:
        return []


def _complete_pipelines(ctx, param, incomplete: str) -> list[str]:
    import yaml

    from spottrain_contract.recipe import find_project_dir
    from launcher.stages import PIPELINES_FILE

    try:
        path = find_project_dir() / PIPELINES_FILE
    except UserError:
        return []
    pipelines = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return [name for name in (pipelines if isinstance(pipelines, dict) else {}) if name.startswith(incomplete)]


def _complete_targets(ctx, param, incomplete: str) -> list[str]:
    from launcher.targets import target_names

    return [name for name in target_names() if name.startswith(incomplete)]


def _complete_runs(ctx, param, incomplete: str) -> list[str]:
    from launcher.registry import Registry
    from spottrain_contract.recipe import find_project_dir

    try:
        records = Registry(find_project_dir()).all()
    except UserError:
        return []
    names = [r.run_id for r in records] + list(dict.fromkeys(r.sweep_id for r in records if r.sweep_id))
    return [name for name in names if name.startswith(incomplete)]


def _target_option(command):
    return click.option("--target", default=DEFAULT_TARGET, show_default=True, help=TARGET_HELP,
                        shell_complete=_complete_targets)(command)


def _json_option(command):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the models in launcher/views.py) instead of a table.")(command)


def _echo_json(value) -> None:
    """A model or a list of models as JSON, the same documents the hub's API returns."""
    from pydantic import BaseModel, TypeAdapter

    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else TypeAdapter(type(value)).dump_python(
        value, mode="json")
    click.echo(json.dumps(data, indent=1, ensure_ascii=False))


@cli.command("list")
@_json_option
def list_recipes(as_json):
    """Table of the recipes: task, GPUs, nodes, spot, targets they render for."""
    from launcher.catalog import recipe_table, recipe_views

    views = recipe_views(_project_dir())
    _echo_json(views) if as_json else click.echo(recipe_table(views))


@cli.command()
@click.argument("name", shell_complete=_complete_recipes)
@_target_option
@_sizing_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the document to FILE instead of standard output.")
def render(name, target, gpus, nodes, profile, overrides, output):
    """Print the document a launch of NAME would submit (secrets masked)."""
    from launcher.display import render_for_display

    plan, document = render_for_display(name, target=target, project_dir=_project_dir(), gpus=gpus, nodes=nodes,
                                        profile=profile, overrides=overrides)
    click.echo(_summary(plan), err=True)
    if output:
        try:
            Path(output).write_text(document)
        except OSError as exc:
            raise UserError(f"{output}: cannot write: {exc.strerror or exc}") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(document, nl=False)


@cli.command()
@click.option("--target", "targets", multiple=True, help="Check only these targets (default: all).")
def check(targets):
    """Render and validate every recipe × target × profile, offline. Non-zero exit on any failure."""
    from launcher.catalog import check_all
    from launcher.targets import get_target, target_names

    for target in targets:
        get_target(target)  # an unknown name is a usage error, not a failed check
    results = check_all(_project_dir(), targets or target_names())
    for result in results:
        click.echo(result.line())
    failed = [r for r in results if not r.ok]
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("name", shell_complete=_complete_recipes)
@_target_option
@_sizing_options
@click.option("--run-id", default=None, help="Continue this run (default: a new run id).")
@click.option("--dry-run", is_flag=True, help="Print what would be submitted (secrets masked) and stop.")
@click.option("--detach", is_flag=True, help="A target that runs here: start in the background and return.")
@click.option("--chaos", default=None, metavar="SPEC",
              help="A target that runs here: kill the job at random moments of its training, e.g. "
                   "kills=5,signals=KILL+TERM,every=1:4,seed=1 (every: seconds of training before each kill).")
@click.option("--allow-changes", is_flag=True,
              help="With --run-id: resume with settings that differ from the launch's (logged at the resume step).")
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
@click.option("--max-parallel", type=click.IntRange(1, 1000), default=None, metavar="N",
              help="A sweep on a platform: at most N cells live at once (the launch waits for one to end before "
                   "it submits the next; default: all at once).")
@click.option("--sweep-id", default=None, help="A sweep: its id (default: <recipe>-<hash of what was asked>).")
@_json_option
def recipe(name, target, gpus, nodes, profile, overrides, run_id, dry_run, detach, chaos, allow_changes, yes,
           max_parallel, sweep_id, as_json):
    """Launch the recipe NAME on a target (with --run-id: resume that run with the settings it was launched
    with, unless others are given). A recipe with a `sweep:` launches one run per cell; launched again, it skips
    the finished cells and resumes the others."""
    from launcher import runner, sweeps
    from launcher.display import render_for_display

    if chaos:
        from launcher.supervisor import Chaos

        Chaos.parse(chaos)  # a bad spec is a one-line error before anything is rendered or launched
    if as_json and not dry_run:
        raise UserError("--json: only with --dry-run (a launch prints its progress)")
    project_dir = _project_dir()
    if run_id is None:
        sweep = sweeps.plan_sweep(name, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                                  profile=_profile_for(target, profile), overrides=overrides, sweep_id=sweep_id,
                                  stages="resolve" if dry_run else "require", chaos=chaos,
                                  allow_changes=allow_changes)
        if sweep is not None:
            _sweep(sweep, project_dir, dry_run=dry_run, detach=detach, yes=yes, max_parallel=max_parallel,
                   as_json=as_json)
            return
    if sweep_id or max_parallel:
        raise UserError(f"--{'sweep-id' if sweep_id else 'max-parallel'}: only for a recipe with a sweep, launched "
                        f"without --run-id")
    launched = runner.launched_recipe(project_dir, run_id)
    if launched is not None and not (overrides or profile or gpus or nodes):
        profile, overrides = launched.profile, launched.overrides  # a plain resume continues as launched
    plan, document = render_for_display(name, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                                        profile=_profile_for(target, profile), overrides=overrides, run_id=run_id,
                                        stages="resolve" if dry_run else "require", chaos=chaos,
                                        resuming=launched, allow_changes=allow_changes,
                                        cell=launched.cell.name if launched and launched.cell else None,
                                        sweep_id=runner.sweep_of(project_dir, run_id))
    if as_json:
        _echo_json(_plan_view(plan, document))
        return
    click.echo(_summary(plan))
    if dry_run:
        click.echo("---")
        click.echo(document, nl=False)
        return
    _confirm_spending(target, yes, "Launch?")
    _submit(plan, project_dir, detach=detach)


def _sweep(sweep, project_dir: Path, *, dry_run: bool, detach: bool, yes: bool, max_parallel,
           as_json: bool) -> None:
    """A sweep recipe: its cells (and each one's summary and document, for a dry run), then one run per cell:
    here one after another in the foreground, on a platform one job each, at most `max_parallel` live."""
    from launcher import sweeps
    from launcher.plan import override_text
    from launcher.sweep_parent import describe_parent
    from launcher.tables import render_table
    from launcher.targets import get_target
    from launcher.views import SweepPlanView

    here = get_target(sweep.target).RUNS_HERE
    if here and (detach or max_parallel) and not dry_run:
        raise UserError(f"--{'detach' if detach else 'max-parallel'}: a sweep's cells run here one after another, "
                        f"in the foreground (Ctrl-C stops the cell that runs, and the sweep)")
    if as_json:
        _echo_json(SweepPlanView(sweep_id=sweep.sweep_id, recipe=sweep.loaded.name, target=sweep.target,
                                 cells=[_plan_view(c.plan, c.document) for c in sweep.cells]))
        return
    pace = "one after another" if here else (f"at most {max_parallel} at once" if max_parallel else "all at once")
    click.echo(f"sweep      {sweep.sweep_id}: {len(sweep.cells)} cells of {' × '.join(sweep.axes)} "
               f"({sweep.loaded.relpath}) on {sweep.target}, {pace}")
    click.echo(render_table(("CELL", "RUN ID", "OVERRIDES"), [
        (c.cell.name, c.plan.run_id, " ".join(override_text(k, v) for k, v in c.cell.overrides.items()) or "-")
        for c in sweep.cells]))
    if dry_run:
        click.echo(describe_parent(sweep, project_dir))
        for cell in sweep.cells:
            click.echo(f"\n== cell {cell.cell.name}")
            click.echo(_summary(cell.plan))
            click.echo("---")
            click.echo(cell.document, nl=False)
        return
    _confirm_spending(sweep.target, yes, f"Launch the {len(sweep.cells)} cells of sweep {sweep.sweep_id} on "
                                         f"{sweep.target}, {pace}?")
    states = sweeps.launch_sweep(sweep, project_dir, max_parallel=max_parallel, say=click.echo,
                                 submit=lambda plan: _submit(plan, project_dir, exit_on_failure=False))
    ended = [state for state in states.values() if state is not None]
    counts = ", ".join(f"{sum(s is state for s in ended)} {state}" for state in dict.fromkeys(ended))
    click.echo(f"sweep {sweep.sweep_id}: " + (counts if here else f"{len(states)} cells submitted"))
    click.echo(f"  launch status {sweep.sweep_id}    launch compare {sweep.sweep_id}")
    if any(state is RunState.FAILED for state in ended):
        sys.exit(1)


@cli.command()
@click.argument("name", shell_complete=_complete_pipelines)
@_target_option
@_sizing_options
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
def pipeline(name, target, gpus, nodes, profile, overrides, yes):
    """Launch every stage of the pipeline NAME (recipes/_pipelines.yaml) in order, each after the last."""
    from launcher import runner
    from launcher.display import render_for_display
    from launcher.registry import Registry
    from launcher.stages import pipeline_stages

    project_dir = _project_dir()
    stages = pipeline_stages(project_dir, name)
    _confirm_spending(target, yes, f"Launch {len(stages)} jobs on {target}, one after another ({', '.join(stages)})?")
    stage_runs: dict[str, str] = {}
    for stage in stages:
        plan, _ = render_for_display(stage, target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                                     profile=_profile_for(target, profile), overrides=overrides, stages="require",
                                     stage_runs=stage_runs)
        click.echo(f"== {name}: stage {stage}")
        click.echo(_summary(plan))
        _submit(plan, project_dir)
        runner.wait_until_finished(Registry(project_dir), plan.run_id)
        stage_runs[stage] = plan.run_id


def _confirm_spending(target: str, yes: bool, question: str) -> None:
    """A launch on a paid target asks first on a terminal; without one it needs --yes, so a script never hangs
    on a prompt and never launches by accident."""
    from launcher.targets import get_target

    if yes or get_target(target).RUNS_HERE:
        return
    if not sys.stdin.isatty():
        raise UserError(f"a launch on {target} spends money: answer its prompt on a terminal, or pass --yes")
    if not click.confirm(question, default=False):
        click.echo("nothing launched")
        sys.exit(1)


def _profile_for(target: str, profile):
    """A launch on a target applies its default profile (local: `local`) unless told otherwise."""
    from launcher.targets import get_target

    return profile or get_target(target).DEFAULT_PROFILE


def _plan_view(plan, document: str):
    from launcher.views import PlanView

    r = plan.recipe
    cell = plan.loaded.cell
    return PlanView(recipe=plan.loaded.name, file=plan.loaded.relpath, profile=plan.loaded.profile, target=plan.target,
                    run_id=plan.run_id, task=r.task, accelerator=r.resources.accelerators[0],
                    gpus=r.resources.preferred_gpus, capacity=r.resources.candidates,
                    nodes=r.resources.nodes, spot=r.resources.spot, effective_batch=r.effective_batch,
                    max_steps=r.train.max_steps, epochs=r.train.epochs, store=r.train.checkpoint.uri,
                    overrides=list(plan.loaded.overrides), changes=list(plan.loaded.changes),
                    sweep_id=plan.sweep_id, cell=cell.name if cell else None,
                    cell_overrides=cell.overrides if cell else {}, document=document)


def _summary(plan) -> str:
    from launcher.targets import get_target

    return plan.summary(get_target(plan.target).describe(plan.recipe))


def _submit(plan, project_dir: Path, *, detach: bool = False, training: bool = True,
            exit_on_failure: bool = True):
    """Submit; a run here is followed in the foreground (Ctrl-C stops it gracefully) unless detached, and its
    final state returned (a failed one exits 1, unless not `exit_on_failure`); None for a run not followed. A job
    that does not train (eval, predict) ends with its own output, not with where checkpoints went."""
    from launcher import runner
    from launcher.console import for_console
    from launcher.registry import Registry
    from launcher.targets import get_target

    done = runner.completed_here(plan, project_dir)
    if done is not None:
        click.echo(f"run {plan.run_id} already finished at step {done}: nothing to resume "
                   f"(launch status {plan.run_id}; final weights in its store's final-hf/)")
        return RunState.FINISHED
    record = runner.submit(plan, project_dir)
    hints = (f"  launch status {record.run_id}    launch logs {record.run_id} --follow    "
             f"launch stop {record.run_id}")
    handle = record.handle
    where = handle.get("url") or (f"managed job {handle['job_id']}" if "job_id" in handle else None)
    click.echo(f"launched {record.run_id} on {record.target}" + (f" ({where})" if where else "")
               + (f", log {record.log}" if record.log else ""))
    if detach or not get_target(record.target).RUNS_HERE:
        click.echo(hints)
        return None
    registry = Registry(project_dir)
    try:
        for line in for_console(runner.logs(record, follow=True)):
            click.echo(line, nl=False)
    except KeyboardInterrupt:
        click.echo(f"stopping {record.run_id}: the job checkpoints first", err=True)
        click.echo(f"run {record.run_id} {runner.stop(registry, registry.get(record.run_id))}", err=True)
        sys.exit(130)
    final = runner.refresh(registry, registry.get(record.run_id))
    if final.state is RunState.FAILED:  # why, and where to read more; no hints about results it never made
        reason = registry.get(record.run_id).handle.get("failure", "no error reported")
        click.echo(f"run {record.run_id} failed at step {final.step}: {reason} (log {record.log})")
        if exit_on_failure:
            sys.exit(1)
        return final.state
    finished = final.state is RunState.FINISHED
    if not training:
        click.echo(f"job {record.run_id} {final.state}")
        return final.state
    click.echo(f"run {record.run_id} {final.state} at step {final.step}")
    click.echo(f"  checkpoints  {record.store}/{record.run_id}" + ("  (final weights in final-hf/)" if finished else ""))
    click.echo(f"  metrics      mlflow ui --backend-store-uri {record.tracking_uri}")
    if not finished:
        click.echo(f"  resume       launch recipe {record.recipe} --target {record.target} --run-id {record.run_id}")
    return final.state


@cli.command()
@click.argument("name", required=False, shell_complete=_complete_recipes)
@_target_option
@_sizing_options
def doctor(name, target, gpus, nodes, profile, overrides):
    """Check online what launching NAME on a target needs: secrets, checkpoint store, MLflow, the platform."""
    from launcher.doctor import run_checks
    from launcher.plan import plan_launch
    from launcher.tables import render_table

    from spottrain_contract.recipe import recipe_names

    project_dir = _project_dir()
    names = recipe_names(project_dir)
    if name is None and len(names) != 1:
        raise UserError(f"doctor: name the recipe to check (one of: {', '.join(names)})")
    plan = plan_launch(name or names[0], target=target, project_dir=project_dir, gpus=gpus, nodes=nodes,
                       overrides=overrides, profile=_profile_for(target, profile))
    checks = run_checks(plan, project_dir)
    click.echo(render_table(("CHECK", "", "DETAIL"), [(c.name, "✓" if c.ok else "✗", c.detail) for c in checks]))
    sys.exit(0 if all(c.ok for c in checks) else 1)


@cli.command()
@click.argument("run_id", required=False, shell_complete=_complete_runs)
@click.option("--all-projects", is_flag=True,
              help="Every project's runs in the database (SPOTTRAIN_DB: a team's), with a PROJECT column.")
@_json_option
def status(run_id, all_projects, as_json):
    """Table of launched runs, a sweep's cells under its own row (or one run; or a sweep's cells): recipe,
    target, state, step, restarts, age, and who launched each where more than one person did."""
    from launcher import runner, sweep_status
    from launcher.registry import Registry
    from launcher.tables import render_table

    if run_id and all_projects:
        raise UserError("--all-projects: only for the list of runs (launch status RUN finds a run of any project)")
    registry = Registry(_project_dir(), every_project=all_projects)
    cells = registry.cells_of(run_id) if run_id and not registry.exists(run_id) else []
    records = cells or ([registry.get(run_id)] if run_id else registry.all())
    views, unreachable = [], []
    for record in records:
        try:
            views.append(runner.run_view(registry, record) if run_id else runner.listed_view(registry, record))
        except UserError as exc:
            if run_id and not cells:
                raise
            # one platform out of reach (no credentials, no network) must not hide the runs of the others
            views.append(runner.run_view(registry, record, reachable=False))
            unreachable.append(f"warning: {record.run_id}: {exc}")
    if as_json:
        _echo_json(views)
    elif cells:
        click.echo(sweep_status.sweep_line(run_id, views))
        click.echo(render_table(sweep_status.CELL_HEADER, sweep_status.cell_rows(views), state_column=2))
    else:
        who = sweep_status.several_launchers(views)
        click.echo(render_table(sweep_status.status_header(projects=all_projects, who=who),
                                sweep_status.status_rows(views, projects=all_projects, who=who),
                                state_column=3 + all_projects))
    for line in [*(f"warning: {skip}" for skip in registry.skipped), *unreachable]:
        click.echo(line, err=True)
    if run_id and not cells and not as_json:
        _echo_ledger(registry, records[0])


PLATFORM_COUNTS = {"skypilot": "SkyPilot"}  # targets whose status counts the job's recoveries (record.restarts)


def _echo_ledger(registry, record) -> None:
    """Under one run's row: its attempts and what preemption cost it (from its store, when it can be read)."""
    from launcher.ledger_view import ledger_text, run_ledger

    try:
        text = ledger_text(run_ledger(registry, record), PLATFORM_COUNTS.get(record.target), record.restarts)
    except Exception as exc:  # no credentials for the store here, or it is out of reach: the row still stands
        click.echo(f"warning: ledger of {record.run_id} not read from {record.store}: {exc}", err=True)
        return
    if text:
        click.echo("")
        click.echo(text)


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@click.option("--raw", is_flag=True, help="Every line, third-party banners and repeated tracebacks included.")
def logs(run_id, follow, raw):
    """Print the log of a launched run."""
    from launcher import runner
    from launcher.console import for_console
    from launcher.registry import Registry

    lines = runner.logs(Registry(_project_dir()).get(run_id), follow)
    for line in lines if raw else for_console(lines):
        click.echo(line, nl=False)


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
def stop(run_id):
    """Stop a run gracefully: it checkpoints, then exits (killed only after a grace period)."""
    from launcher import runner
    from launcher.registry import Registry

    registry = Registry(_project_dir())
    click.echo(f"run {run_id} {runner.stop(registry, registry.get(run_id))}")


_CHECKPOINT_HELP = "Which of the run's checkpoints: best, last, or a step number (default: best)."


@cli.command("eval")
@click.argument("run_id", required=False, shell_complete=_complete_runs)
@click.option("--target", default=None, shell_complete=_complete_targets,
              help="Where the evaluation runs (default: where the run trained).")
@click.option("--checkpoint", default="best", show_default=True, help=_CHECKPOINT_HELP)
@click.option("--csv", "test_csv", default=None, help="vlm_lora: judge on this CSV (url, query, annotation) instead "
                                                      "of the run's train.data.test_csv (a path where it runs).")
@click.option("--prompt-template", default=None, help="vlm_lora: the user turn, with {query}.")
@click.option("--system-message", default=None, help="vlm_lora: a system turn before it.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="vlm_lora: prompts per generate().")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="vlm_lora: tokens generated at most.")
@click.option("--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the run's recipe for this evaluation (repeatable).")
@click.option("--lora-path", default=None, help="vlm_lora without RUN_ID: judge this adapter directory (peft), "
                                                "trained anywhere, on --model-id.")
@click.option("--model-id", default=None, help="vlm_lora: the base model of --lora-path (hub id or path).")
@click.option("--model-type", default=None, help="vlm_lora: its family (llava, qwen2_vl, qwen2_5_vl, blip2, …).")
@click.option("--recipe", "recipe_name", default="vlm_ablation", show_default=True,
              help="With --lora-path: the recipe whose resources, data and options the evaluation uses.")
@click.option("--output-dir", default="eval_results", show_default=True,
              help="With --lora-path: where predictions.jsonl and generation_metrics.json are written.")
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
def evaluate(run_id, target, checkpoint, test_csv, prompt_template, system_message, batch_size, max_new_tokens,
             overrides, lora_path, model_id, model_type, recipe_name, output_dir, yes):
    """Judge RUN_ID's weights on its test data: the ranker's test split (accuracy, per-gap accuracy, Kendall's
    tau), the VLM task's test CSV by generation (exact match, BLEU-4, METEOR, ROUGE-L). Without RUN_ID,
    --lora-path judges an adapter trained anywhere."""
    from launcher.weights import evaluation_overrides, plan_adapter_evaluation, plan_weights_job, trained_on

    project_dir = _project_dir()
    if (run_id is None) == (lora_path is None):
        raise click.UsageError("give RUN_ID, or --lora-path (with --model-id and --csv) for an adapter from anywhere")
    target = target or (trained_on(project_dir, run_id, "eval") if run_id else "local")
    extra = evaluation_overrides(target, test_csv=test_csv, prompt_template=prompt_template,
                                 system_message=system_message, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 model_id=model_id, model_type=model_type)
    if lora_path:
        plan = plan_adapter_evaluation(project_dir, recipe_name, target, _profile_for(target, None), lora_path,
                                       output_dir, [*extra, *overrides])
        click.echo(f"evaluating adapter {lora_path} on {plan.recipe.train.model.id} on {plan.target} as job "
                   f"{plan.run_id}")
        _confirm_spending(plan.target, yes, "Launch the evaluation?")
        _submit(plan, project_dir, training=False)
        return
    plan = plan_weights_job(project_dir, run_id, "eval", ["--checkpoint", checkpoint], target,
                            [*extra, *overrides])
    click.echo(f"evaluating run {run_id} ({checkpoint} checkpoint) on {plan.target} as job {plan.run_id}")
    _confirm_spending(plan.target, yes, "Launch the evaluation?")
    _submit(plan, _project_dir(), training=False)


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--target", default=None, shell_complete=_complete_targets,
              help="Where the prediction runs (default: where the run trained); inputs are paths there.")
@click.option("--checkpoint", default="best", show_default=True, help=_CHECKPOINT_HELP)
@click.option("-o", "--out", default=None, help="Write the results to this file (on the machine that runs it).")
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
def predict(run_id, inputs, target, checkpoint, out, yes):
    """Use RUN_ID's weights on INPUTS: IMAGE_A IMAGE_B (the winner), a CSV of pairs (JSONL) or a folder (a
    ranked CSV)."""
    from launcher.weights import input_paths, plan_weights_job, trained_on

    project_dir = _project_dir()
    target = target or trained_on(project_dir, run_id, "predict")
    arguments = ["--checkpoint", checkpoint, *(["--out", *input_paths([out], target)] if out else []),
                 *input_paths(inputs, target)]
    plan = plan_weights_job(project_dir, run_id, "predict", arguments, target)
    click.echo(f"predicting with run {run_id} ({checkpoint} checkpoint) on {plan.target} as job {plan.run_id}")
    _confirm_spending(plan.target, yes, "Launch the prediction?")
    _submit(plan, project_dir, training=False)


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN_A RUN_B | SWEEP", shell_complete=_complete_runs)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Two runs: overlay their loss curves in FILE.png; a sweep: its metrics per cell.")
@click.option("--metric", "metrics", multiple=True, metavar="KEY",
              help="A sweep: show this MLflow metric instead of the evaluation metrics (repeatable).")
@click.option("--out", type=click.Path(), default=None,
              help="A sweep: where its summary goes (a file, or a directory for ablation_summary.json; "
                   "default: ./ablation_summary.json).")
@_json_option
def compare(runs, plot, metrics, out, as_json):
    """Two runs: config diff (flattened params from MLflow) and final metrics side by side. A sweep: its cells ×
    final metrics (evaluation metrics, train/loss, GPU-hours), also written to ablation_summary.json."""
    from launcher.compare import compare as compare_runs, compare_view
    from launcher.registry import Registry

    registry = Registry(_project_dir())
    if len(runs) == 1:
        _compare_sweep(registry, runs[0], plot, metrics, out, as_json)
        return
    if len(runs) != 2:
        raise UserError(f"compare: name two runs or one sweep, got {len(runs)} names")
    if metrics or out:
        raise UserError(f"--{'metric' if metrics else 'out'}: only for a sweep (launch compare SWEEP)")
    run_a, run_b = runs
    if as_json:
        _echo_json(compare_view(registry, run_a, run_b)[0])
    else:
        click.echo(compare_runs(registry, run_a, run_b, Path(plot) if plot else None))


def _compare_sweep(registry, sweep_id: str, plot, metrics, out, as_json) -> None:
    from launcher.ablation import SUMMARY_FILE, ablation_table, ablation_view, plot_metrics, write_summary

    if registry.exists(sweep_id) and not registry.cells_of(sweep_id):
        raise UserError(f"compare: {sweep_id} is a run, not a sweep: name two runs (launch compare RUN_A RUN_B)")
    view = ablation_view(registry, sweep_id, metrics)
    written = write_summary(view, Path(out or SUMMARY_FILE))
    if as_json:
        _echo_json(view)
    else:
        click.echo(f"sweep {sweep_id}: {len(view.cells)} cells")
        click.echo(ablation_table(view))
        click.echo(f"wrote {written}")
    if plot:
        drawn = plot_metrics(view, Path(plot))
        click.echo(f"wrote {drawn} ({', '.join(view.metrics)})", err=as_json)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but a loopback address needs a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", default=None, envvar="SPOTTRAIN_HUB_TOKEN", show_envvar=True,
              help="Every request must carry it (Authorization: Bearer, or the login form's cookie).")
@click.option("--db", default=None, envvar="SPOTTRAIN_DB", show_envvar=True,
              help="The run database (default: runs/spottrain.db here); postgresql://… for a team's.")
@click.option("--mlflow", "mlflow_uri", default=None, metavar="URI",
              help="The MLflow server whose runs other scripts logged into the recipes' experiments are listed "
                   "read-only (default: the recipes' server, else MLFLOW_TRACKING_URI; none: not listed).")
def hub(host, port, token, db, mlflow_uri):
    """Serve the hub: runs, new runs from a form, live curves and logs, stop, clone, compare (a browser face
    over the same runner and registry as these commands), and MLflow runs logged elsewhere, read-only."""
    from launcher.hub.auth import is_loopback

    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: the hub would be reachable from other machines: give it a token "
                        f"(--token or SPOTTRAIN_HUB_TOKEN), or listen on 127.0.0.1")
    project_dir = _project_dir()
    if db:
        from launcher.rundb.engine import DB_ENV

        os.environ[DB_ENV] = db  # every registry the hub opens, and the launches it starts, use it
    import uvicorn

    from launcher.hub.app import create_app

    app = create_app(project_dir, token=token, mlflow_uri=mlflow_uri)
    click.echo(f"hub for {project_dir} on http://{host}:{port}/" + (" (token required)" if token else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


def main():
    try:
        cli.main(standalone_mode=False)
    except UserError as exc:
        for line in str(exc).splitlines():  # a recipe with several problems: one line each
            click.echo(f"error: {line}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors too: one line, like every other error
        hint = f" (see {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) else ""
        click.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
