"""The `launch` command. Thin: parse, call the core, print. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import click

from launcher.requests import DEFAULT_TARGET
from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState

TARGET_HELP = "Where it runs: skypilot, vessl, local, or a target another package registers."


def _workspace(*, every_project: bool = False):
    """The project and its run database, opened once for the command."""
    from launcher.operations import Workspace

    return Workspace.open(every_project=every_project)


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

    from launcher.operations import code_version

    code = code_version(Path(__file__).resolve().parent.parent)
    click.echo(f"launch {version('spottrain')} (" + (f"commit {code}" if code else "not run from a git checkout") + ")")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and the commit it was built from, then exit.")
def cli():
    """Launch training recipes on SkyPilot, VESSL or this machine."""


def _completions(names) -> Callable:
    """Shell completion (bash, zsh, fish: see the README) from `names(workspace)`; nothing outside a project."""
    def complete(ctx, param, incomplete: str) -> list[str]:
        try:
            return [name for name in names(_workspace()) if name.startswith(incomplete)]
        except UserError:
            return []

    return complete


def _recipe_names(ws):
    from launcher.operations import recipe_names

    return recipe_names(ws)


def _pipeline_names(ws):
    from launcher.operations import pipelines

    return pipelines(ws)


def _run_names(ws):
    from launcher.operations import run_names

    return run_names(ws)


_complete_recipes, _complete_pipelines = _completions(_recipe_names), _completions(_pipeline_names)
_complete_runs = _completions(_run_names)


def _complete_targets(ctx, param, incomplete: str) -> list[str]:
    from launcher.operations import targets

    return [name for name in targets() if name.startswith(incomplete)]


def _target_option(command):
    return click.option("--target", default=DEFAULT_TARGET, show_default=True, help=TARGET_HELP,
                        shell_complete=_complete_targets)(command)


def _launch_target_option(command):
    return click.option("--target", default=None, shell_complete=_complete_targets,
                        help=f"{TARGET_HELP} Default: {DEFAULT_TARGET}; with --run-id, where the run was launched.")(
        command)


def _json_option(command):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the models in launcher/views/) instead of a table.")(command)


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
    from launcher import operations as ops

    views = ops.recipes(_workspace())
    _echo_json(views) if as_json else click.echo(ops.recipe_table(views))


def _request(name, **flags):
    """The launch request the flags ask for (named as its fields), built once."""
    from launcher.operations import LaunchRequest

    return LaunchRequest(name, **{**flags, "overrides": tuple(flags.get("overrides", ()))})


@cli.command()
@click.argument("name", shell_complete=_complete_recipes)
@_target_option
@_sizing_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the document to FILE instead of standard output.")
def render(name, output, **flags):
    """Print the document a launch of NAME would submit (secrets masked)."""
    from launcher import operations as ops

    planned = ops.render(_workspace(), _request(name, **flags))
    click.echo(planned.summary, err=True)
    if output:
        try:
            Path(output).write_text(planned.document)
        except OSError as exc:
            raise UserError(f"{output}: cannot write: {exc.strerror or exc}") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(planned.document, nl=False)


@cli.command()
@click.option("--target", "targets", multiple=True, help="Check only these targets (default: all).")
def check(targets):
    """Render and validate every recipe × target × profile, offline. Non-zero exit on any failure."""
    from launcher import operations as ops

    results = ops.check(_workspace(), tuple(targets))
    for result in results:
        click.echo(result.line())
    failed = [r for r in results if not r.ok]
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("name", shell_complete=_complete_recipes)
@_launch_target_option
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
def recipe(name, dry_run, detach, yes, as_json, **flags):
    """Launch the recipe NAME on a target (with --run-id: resume that run with the settings it was launched
    with, unless others are given). A recipe with a `sweep:` launches one run per cell; launched again, it skips
    the finished cells and resumes the others."""
    from launcher import operations as ops

    if as_json and not dry_run:
        raise UserError("--json: only with --dry-run (a launch prints its progress)")
    ws = _workspace()
    request = _request(name, **flags)
    planned = ops.prepare(ws, request, ops.DependencyLookup.DESCRIBE if dry_run else ops.DependencyLookup.REQUIRE)
    if isinstance(planned, ops.PlannedSweep):
        _sweep(ws, planned, dry_run=dry_run, detach=detach, yes=yes, as_json=as_json)
        return
    if as_json:
        _echo_json(planned.view())
        return
    click.echo(planned.summary)
    if dry_run:
        click.echo("---")
        click.echo(planned.document, nl=False)
        return
    _confirm_spending(planned.target, yes, "Launch?")
    _submit(ws, planned, detach=detach)


def _sweep(ws, sweep, *, dry_run: bool, detach: bool, yes: bool, as_json: bool) -> None:
    """A sweep recipe: its cells (and each one's summary and document, for a dry run), then one run per cell:
    here one after another in the foreground, on a platform one job each, at most `max_parallel` live."""
    from launcher import operations as ops
    from launcher.views.tables import render_table
    from spottrain_contract.search import budget_value

    if sweep.runs_here and detach and not dry_run and not sweep.controlled:
        raise UserError("--detach: a sweep's cells run here one after another, in the foreground (Ctrl-C stops the "
                        "cell that runs, and the sweep)")
    if as_json:
        _echo_json(sweep.view())
        return
    plan = sweep.sweep
    search = sweep.search
    if search is not None and search.trials:
        click.echo(f"sweep      {plan.sweep_id}: {search.trials} trials drawn by {search.sampler} from "
                   + ", ".join([*(f"{axis} ({len(entries)} entries)" for axis, entries in plan.axes.items()),
                                *(f"{key} {d.kind} {list(d.values)}" for key, d in search.space.items())])
                   + f" ({plan.loaded.relpath}) on {plan.target}, {sweep.pace}; its corner cells:")
    else:
        click.echo(f"sweep      {plan.sweep_id}: {len(sweep.cells)} cells of {' × '.join(plan.axes)} "
                   f"({plan.loaded.relpath}) on {plan.target}, {sweep.pace}")
    if sweep.controlled:
        rungs = search.rungs(budget_value(plan.loaded.resolved, search.budget) or 0)
        click.echo(f"search     {search.method} on {search.metric} ({search.mode}), budget {search.budget}"
                   + (f", rungs at {', '.join(f'{r:g}' for r in rungs)}" if rungs else "")
                   + ": losing cells are stopped early by the sweep's controller")
    click.echo(render_table(("CELL", "RUN ID", "OVERRIDES"), [
        (cell, run_id, " ".join(overrides) or "-") for cell, run_id, overrides in sweep.cell_rows()]))
    if dry_run:
        click.echo(sweep.parent)
        for cell in sweep.cells:
            click.echo(f"\n== cell {cell.view().cell}")
            click.echo(cell.summary)
            click.echo("---")
            click.echo(cell.document, nl=False)
        return
    _confirm_spending(plan.target, yes, f"Launch the {len(sweep.cells)} cells of sweep {plan.sweep_id} on "
                                        f"{plan.target}, {sweep.pace}?")
    if sweep.controlled:
        started = ops.start_search(ws, sweep)
        click.echo(f"sweep {plan.sweep_id}: {'recorded before, ' if started.relaunched else ''}controller "
                   f"{started.controller}, log {started.log}")
        click.echo(f"  launch sweep status {plan.sweep_id}    launch sweep stop {plan.sweep_id}    "
                   f"launch compare {plan.sweep_id}")
        return
    states = ops.launch_sweep(ws, sweep, say=click.echo,
                              submit_cell=lambda cell: _submit(ws, cell, exit_on_failure=False))
    ended = [state for state in states.values() if state is not None]
    counts = ", ".join(f"{sum(s is state for s in ended)} {state}" for state in dict.fromkeys(ended))
    click.echo(f"sweep {plan.sweep_id}: " + (counts if sweep.runs_here else f"{len(states)} cells submitted"))
    click.echo(f"  launch status {plan.sweep_id}    launch compare {plan.sweep_id}")
    if any(state is RunState.FAILED for state in ended):
        sys.exit(1)


@cli.command()
@click.argument("name", shell_complete=_complete_pipelines)
@_target_option
@_sizing_options
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
def pipeline(name, yes, **flags):
    """Launch every stage of the pipeline NAME (recipes/_pipelines.yaml) in order, each after the last."""
    from launcher import operations as ops

    ws = _workspace()
    stages = ops.pipeline_requests(ws, name, _request(name, **flags))
    target = flags["target"]
    _confirm_spending(target, yes, f"Launch {len(stages)} jobs on {target}, one after another "
                                   f"({', '.join(s.recipe for s in stages)})?")
    before: dict[str, str] = {}
    for stage in stages:
        planned = ops.launch_stage(ws, stage, before)
        click.echo(f"== {name}: stage {stage.recipe}")
        click.echo(planned.summary)
        _submit(ws, planned)
        ops.wait_for(ws, planned.run_id)
        before[stage.recipe] = planned.run_id


def _confirm_spending(target: str, yes: bool, question: str) -> None:
    """A launch on a paid target asks first on a terminal; without one it needs --yes, so a script never hangs
    on a prompt and never launches by accident."""
    from launcher import operations as ops

    if yes or not ops.confirm_needed(target):
        return
    if not sys.stdin.isatty():
        raise UserError(f"a launch on {target} spends money: answer its prompt on a terminal, or pass --yes")
    if not click.confirm(question, default=False):
        click.echo("nothing launched")
        sys.exit(1)


def _submit(ws, planned, *, detach: bool = False, training: bool = True, exit_on_failure: bool = True):
    """Submit; a run here is followed in the foreground (Ctrl-C stops it gracefully) unless detached, and its
    final state returned (a failed one exits 1, unless not `exit_on_failure`); None for a run not followed. A job
    that does not train (eval, predict) ends with its own output, not with where checkpoints went."""
    from launcher import operations as ops

    run = ops.submit(ws, planned)
    if run.finished_at is not None:
        click.echo(f"run {run.run_id} already finished at step {run.finished_at}: nothing to resume "
                   f"(launch status {run.run_id}" + ("; final weights in its store's final-hf/)" if run.exports_final
                                                     else ")"))
        return RunState.FINISHED
    click.echo(f"launched {run.run_id} on {run.target}" + (f" ({run.where})" if run.where else "")
               + (f", log {run.log}" if run.log else ""))
    if detach or not run.runs_here:
        click.echo(f"  launch status {run.run_id}    launch logs {run.run_id} --follow    launch stop {run.run_id}")
        return None
    try:
        for line in ops.follow(ws, run.run_id):
            click.echo(line, nl=False)
    except KeyboardInterrupt:
        click.echo(f"stopping {run.run_id}: the job checkpoints first", err=True)
        click.echo(f"run {run.run_id} {ops.stop(ws, run.run_id)}", err=True)
        click.echo(f"  resume       launch recipe {run.recipe} --run-id {run.run_id}", err=True)
        sys.exit(130)
    final = ops.outcome(ws, run.run_id)
    if final.state is RunState.FAILED:  # why, and where to read more; no hints about results it never made
        click.echo(f"run {run.run_id} failed at step {final.step}: {final.failure or 'no error reported'} "
                   f"(log {run.log})")
        if exit_on_failure:
            sys.exit(1)
        return final.state
    if not training:
        click.echo(f"job {run.run_id} {final.state}")
        return final.state
    finished = final.state is RunState.FINISHED
    click.echo(f"run {run.run_id} {final.state} at step {final.step}")
    if finished and (registered := ops.registration_of(ws, run.run_id)):
        click.echo(f"  model        {registered}")
    click.echo(f"  checkpoints  {run.store}/{run.run_id}"
               + ("  (final weights in final-hf/)" if finished and run.exports_final else ""))
    click.echo(f"  metrics      mlflow ui --backend-store-uri {run.tracking_uri}")
    if not finished:
        click.echo(f"  resume       launch recipe {run.recipe} --run-id {run.run_id}")
    return final.state


@cli.command()
@click.argument("name", required=False, shell_complete=_complete_recipes)
@_target_option
@_sizing_options
def doctor(name, **flags):
    """Check online what launching NAME on a target needs: secrets, checkpoint store, MLflow, the platform."""
    from launcher import operations as ops

    checks = ops.doctor_checks(_workspace(), _request(name or "", **flags))
    click.echo(f"{'CHECK':<{DOCTOR_NAMES}}     DETAIL")
    passed = True
    for check in checks:  # each row as its check finishes: the platform's may take half a minute
        click.echo(f"{check.name:<{DOCTOR_NAMES}}  {'✓' if check.ok else '✗'}  {check.detail}")
        passed = passed and check.ok
    sys.exit(0 if passed else 1)


DOCTOR_NAMES = 19  # the width of `launch doctor`'s check names (`SkyPilot API server`)


@cli.command()
@click.argument("run_id", required=False, shell_complete=_complete_runs)
@click.option("--all-projects", is_flag=True,
              help="Every project's runs in the database (SPOTTRAIN_DB: a team's), with a PROJECT column.")
@_json_option
def status(run_id, all_projects, as_json):
    """Table of launched runs, a sweep's cells under its own row (or one run; or a sweep's cells): recipe,
    target, state, step, restarts, age, and who launched each where more than one person did."""
    from launcher import operations as ops
    from launcher.sweeps import status as sweep_status
    from launcher.views.tables import render_table

    if run_id and all_projects:
        raise UserError("--all-projects: only for the list of runs (launch status RUN finds a run of any project)")
    report = ops.status(_workspace(every_project=all_projects), run_id)
    if as_json:
        _echo_json(report.views)
    elif report.sweep_id:
        click.echo(sweep_status.sweep_line(run_id, report.views))
        click.echo(render_table(sweep_status.CELL_HEADER, sweep_status.cell_rows(report.views), state_column=2))
    else:
        who = sweep_status.several_launchers(report.views)
        click.echo(render_table(sweep_status.status_header(projects=all_projects, who=who),
                                sweep_status.status_rows(report.views, projects=all_projects, who=who),
                                state_column=3 + all_projects))
    for line in report.warnings:
        click.echo(line, err=True)
    if report.ledger_table and not as_json:
        click.echo("")
        click.echo(report.ledger_table)


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@click.option("--raw", is_flag=True, help="Every line, third-party banners and repeated tracebacks included.")
def logs(run_id, follow, raw):
    """Print the log of a launched run."""
    from launcher import operations as ops

    for line in ops.logs(_workspace(), run_id, follow=follow, raw=raw):
        click.echo(line, nl=False)


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
def stop(run_id):
    """Stop a run gracefully: it checkpoints, then exits (killed only after a grace period)."""
    from launcher import operations as ops

    click.echo(f"run {run_id} {ops.stop(_workspace(), run_id)}")


@cli.group()
def sweep():
    """A sweep that a search explores (asha, hyperband, median): its controller runs without your terminal."""


@sweep.command("status")
@click.argument("sweep_id")
@_json_option
def sweep_status_command(sweep_id, as_json):
    """Each cell's state, metric and judgements, the best cell, steps against the full grid, and dollars."""
    from launcher import operations as ops
    from launcher.sweeps.status import search_lines

    report = ops.search_report(_workspace(), sweep_id)
    if as_json:
        _echo_json(report)
        return
    for line in search_lines(report):
        click.echo(line)


@sweep.command("stop")
@click.argument("sweep_id")
def sweep_stop(sweep_id):
    """Stop the sweep: its controller stops every live cell gracefully (checkpoints kept)."""
    from launcher import operations as ops

    click.echo(f"sweep {sweep_id} {ops.stop_search(_workspace(), sweep_id)}")


@sweep.command("resume")
@click.argument("sweep_id")
def sweep_resume(sweep_id):
    """Go on with a stopped sweep or one whose controller died, where its decisions left it."""
    from launcher import operations as ops

    started = ops.resume_search(_workspace(), sweep_id)
    click.echo(f"sweep {sweep_id}: controller {started.controller}, log {started.log}")


OPTION_ALIASES = ("csv", "prompt_template", "system_message", "batch_size", "max_new_tokens", "model_id",
                  "model_type")  # `launch eval`'s flags of the vlm_lora task's job options, kept as documented


def _job_options(flags: dict) -> tuple[tuple[str, object], ...]:
    """`--option NAME=VALUE`s and the aliases given, as (name, value). An option is one value: YAML types a
    scalar (`32` a number), and text YAML would read as a mapping or list ("Question: {query}") stays text."""
    import yaml

    options = {name: flags.pop(name) for name in OPTION_ALIASES}
    for text in flags.pop("options"):
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UserError(f"--option: expected NAME=VALUE, got {text!r}")
        typed = yaml.safe_load(value) if value else ""
        options[name] = value if isinstance(typed, (dict, list)) else typed
    return tuple((name, value) for name, value in options.items() if value is not None)


_CHECKPOINT_HELP = "Which of the run's checkpoints: best, last, or a step number (default: best)."


# `launch eval`, `launch predict` and `launch models` read the Model Registry alike (operations.models.registry_uri)
_MLFLOW_OPTION = click.option("--mlflow", "mlflow_uri", default=None, metavar="URI",
                              help="The MLflow server of the Model Registry a models:/ name is read from (default: "
                                   "MLFLOW_TRACKING_URI, else where this project's newest run logged).")


@cli.command("eval")
@click.argument("run_id", required=False, shell_complete=_complete_runs, metavar="[RUN_ID|models:/NAME@ALIAS]")
@click.option("--target", default=None, shell_complete=_complete_targets,
              help="Where the evaluation runs (default: where the run trained).")
@click.option("--checkpoint", default="best", show_default=True, help=_CHECKPOINT_HELP)
@click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
              help="An option the run's task declares for its jobs (repeatable). vlm_lora: csv, prompt_template, "
                   "system_message, batch_size, max_new_tokens, model_id, model_type; pairwise_ranking: labels "
                   "(another labelled metadata CSV), labels_images.")
@click.option("--csv", default=None, help="Alias of --option csv=PATH (vlm_lora: judge on this CSV of url, query, "
                                          "annotation; a path where it runs).")
@click.option("--prompt-template", default=None, help="Alias of --option prompt_template=… (the user turn, "
                                                      "with {query}).")
@click.option("--system-message", default=None, help="Alias of --option system_message=… (a system turn).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Alias of --option batch_size=N (prompts per generate()).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Alias of --option max_new_tokens=N (tokens generated at most).")
@click.option("--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the run's recipe for this evaluation (repeatable).")
@click.option("--lora-path", default=None, help="vlm_lora without RUN_ID: judge this adapter directory (peft), "
                                                "trained anywhere, on --model-id.")
@click.option("--model-id", default=None, help="Alias of --option model_id=… (vlm_lora: the base model of "
                                               "--lora-path, a hub id or path).")
@click.option("--model-type", default=None, help="Alias of --option model_type=… (vlm_lora: its family: llava, "
                                                 "qwen2_vl, qwen2_5_vl, blip2, …).")
@click.option("--recipe", "recipe_name", default="vlm_ablation", show_default=True,
              help="With --lora-path: the recipe whose resources, data and options the evaluation uses.")
@click.option("--output-dir", default="eval_results", show_default=True,
              help="With --lora-path: where predictions.jsonl and generation_metrics.json are written.")
@_MLFLOW_OPTION
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
def evaluate(run_id, lora_path, yes, **flags):
    """Judge RUN_ID's (or a registered version's: models:/NAME@ALIAS, models:/NAME/VERSION) weights on its
    test data: the ranker's test split (accuracy, per-gap accuracy, Kendall's
    tau), the VLM task's test CSV by generation (exact match, BLEU-4, METEOR, ROUGE-L). Without RUN_ID,
    --lora-path judges an adapter trained anywhere."""
    from launcher import operations as ops

    if (run_id is None) == (lora_path is None):
        raise click.UsageError("give RUN_ID, or --lora-path (with --model-id and --csv) for an adapter from anywhere")
    options = _job_options(flags)
    ws, overrides, target = _workspace(), tuple(flags["overrides"]), flags["target"]
    if lora_path:
        job = ops.plan_adapter_eval(ws, ops.AdapterEvalRequest(lora_path, flags["recipe_name"], target or "local",
                                                               flags["output_dir"], options, overrides))
    else:
        run_id, checkpoint = _run_of(ws, run_id, flags["checkpoint"], flags["mlflow_uri"])
        job = ops.plan_job(ws, ops.WeightsJobRequest(ops.JobKind.EVAL, run_id, checkpoint, target, options,
                                                     overrides))
    _run_job(ws, job, yes, "Launch the evaluation?")


def _run_of(ws, run_or_model: str, checkpoint: str, mlflow_uri: Optional[str]) -> tuple[str, str]:
    """RUN as given, or the run and checkpoint step a registered version (models:/NAME@ALIAS, models:/NAME/N)
    names, in the registry `launch models` reads (--mlflow, else MLFLOW_TRACKING_URI, else where this project's
    newest run logged)."""
    from launcher import operations as ops

    if not run_or_model.startswith("models:/"):
        return run_or_model, checkpoint
    if checkpoint != "best":
        raise UserError(f"--checkpoint: {run_or_model} names its checkpoint already")
    run_id, step = ops.resolve_model(ws, run_or_model, mlflow_uri)
    click.echo(f"{run_or_model} is run {run_id}, step {step}")
    return run_id, step


def _run_job(ws, job, yes: bool, question: str) -> None:
    click.echo(job.says)
    _confirm_spending(job.planned.target, yes, question)
    _submit(ws, job.planned, training=False)


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--target", default=None, shell_complete=_complete_targets,
              help="Where the prediction runs (default: where the run trained); inputs are paths there.")
@click.option("--checkpoint", default="best", show_default=True, help=_CHECKPOINT_HELP)
@click.option("-o", "--out", default=None, help="Write the results to this file (on the machine that runs it).")
@_MLFLOW_OPTION
@click.option("-y", "--yes", is_flag=True, help="Launch on a paid target without asking.")
def predict(run_id, inputs, target, checkpoint, out, mlflow_uri, yes):
    """Use RUN_ID's (or a registered version's: models:/NAME@ALIAS) weights on INPUTS: IMAGE_A IMAGE_B (the
    winner), a CSV of pairs (JSONL) or a folder (a
    ranked CSV)."""
    from launcher import operations as ops

    ws = _workspace()
    run_id, checkpoint = _run_of(ws, run_id, checkpoint, mlflow_uri)
    job = ops.plan_job(ws, ops.WeightsJobRequest(ops.JobKind.PREDICT, run_id, checkpoint, target,
                                                 inputs=tuple(inputs), out=out))
    _run_job(ws, job, yes, "Launch the prediction?")


@cli.command()
@click.argument("run_id", shell_complete=_complete_runs)
@click.option("--name", required=True, help="The registered model (created on first use).")
@click.option("--checkpoint", default="final", show_default=True,
              help="final (the final-hf/ export), best, or a complete step number.")
@click.option("--alias", default=None, help="Move this alias to the new version, e.g. champion.")
@click.option("--mlflow", "mlflow_uri", default=None, metavar="URI",
              help="The MLflow server of the Model Registry (default: the one the run logged to).")
@_json_option
def register(run_id, name, checkpoint, alias, mlflow_uri, as_json):
    """Register a finished run's checkpoint as a version of model NAME in MLflow's Model Registry, with its
    lineage (run, resolved recipe, commit, data digests, metrics, goodput); the weights stay in the store."""
    from launcher import operations as ops

    view = ops.register(_workspace(), ops.RegisterRequest(run_id, name, checkpoint, alias, mlflow_uri))
    if as_json:
        _echo_json(view)
        return
    click.echo(f"registered run {run_id} ({view.checkpoint} checkpoint, step {view.step}) as models:/{name}/"
               f"{view.version}" + (f" (alias {alias}: models:/{name}@{alias})" if alias else ""))
    click.echo(f"  weights  {view.weights}")


@cli.command()
@click.argument("name", required=False)
@click.option("--alias", default=None, help="With NAME as models:/NAME/VERSION: move this alias to that version.")
@_MLFLOW_OPTION
@_json_option
def models(name, alias, mlflow_uri, as_json):
    """The Model Registry: each model's versions, aliases, the run each came from, and versions whose files
    the store no longer holds."""
    from launcher import operations as ops
    from launcher.views.tables import render_table

    ws = _workspace()
    if alias:
        if not name:
            raise UserError("--alias: name the version, models:/NAME/VERSION")
        view = ops.set_model_alias(ws, name, alias, mlflow_uri)
        click.echo(f"models:/{view.name}@{alias} is version {view.version} (run {view.run_id})")
        return
    found = ops.models(ws, mlflow_uri, name)
    if as_json:
        _echo_json(found)
        return
    rows = [(v.name, v.version, ",".join(v.aliases) or "-", v.run_id or "-", v.checkpoint or "-",
             "-" if v.step is None else v.step, _files_state(v.missing_files))
            for model in found for v in model.versions]
    click.echo(render_table(("MODEL", "VERSION", "ALIASES", "RUN", "CHECKPOINT", "STEP", "FILES"), rows))


def _files_state(missing) -> str:
    if missing is None:
        return "not checked"
    return f"MISSING {len(missing)} ({missing[0]}…)" if missing else "in store"


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN_A RUN_B | SWEEP", shell_complete=_complete_runs)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Two runs: overlay their loss curves in FILE.png; a sweep: its metrics per cell.")
@click.option("--metric", "metrics", multiple=True, metavar="KEY",
              help="A sweep: show this MLflow metric instead of the evaluation metrics (repeatable).")
@click.option("--out", type=click.Path(), default=None,
              help="A sweep: where its summary goes (a file, or a directory for ablation_summary.json; "
                   "default: runs/sweeps/SWEEP/ablation_summary.json in the project).")
@click.option("--all", "every_metric", is_flag=True,
              help="Two runs: every metric, the bookkeeping ones too (perf/*, transfer/*, checkpoint/*, ledger/*, "
                   "epoch, learning rate); without it, the losses and evaluation metrics.")
@_json_option
def compare(runs, plot, metrics, out, every_metric, as_json):
    """Two runs: config diff (the settings each run's launch shipped) and final metrics side by side, losses and
    evaluation metrics first. A sweep: its cells × final metrics (evaluation metrics, train/loss, GPU-hours), also
    written to runs/sweeps/SWEEP/ablation_summary.json (or --out)."""
    from launcher import operations as ops

    ws = _workspace()
    if len(runs) == 1:
        if every_metric:
            raise UserError("--all: only for two runs (a sweep's columns: --metric KEY)")
        swept = ops.compare_sweep(ws, runs[0], metrics=metrics, out=Path(out) if out else None,
                                  plot=Path(plot) if plot else None)
        if as_json:
            _echo_json(swept.view)
        else:
            click.echo(f"sweep {runs[0]}: {len(swept.view.cells)} cells")
            click.echo(swept.table)
            written = swept.written.absolute()
            click.echo(f"wrote {written.relative_to(Path.cwd()) if written.is_relative_to(Path.cwd()) else written}")
        if swept.plotted:
            click.echo(swept.plotted, err=as_json)
        return
    if len(runs) != 2:
        raise UserError(f"compare: name two runs or one sweep, got {len(runs)} names")
    if metrics or out:
        raise UserError(f"--{'metric' if metrics else 'out'}: only for a sweep (launch compare SWEEP)")
    view = ops.compare_runs(ws, runs)
    if as_json:
        _echo_json(view)
        return
    click.echo(ops.compare_text(view, every_metric))
    if plot:
        click.echo("")
        click.echo(ops.plot_runs(ws, runs, Path(plot)))


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
    import threading

    from launcher import operations as ops
    from launcher.hub.auth import is_loopback

    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: the hub would be reachable from other machines: give it a token "
                        f"(--token or SPOTTRAIN_HUB_TOKEN), or listen on 127.0.0.1")
    if db:
        os.environ["SPOTTRAIN_DB"] = db  # the hub's run database, and that of the launches it starts
    ws = _workspace(every_project=True)
    import uvicorn

    from launcher.hub.app import create_app

    app = create_app(ws, token=token, mlflow_uri=mlflow_uri)
    click.echo(f"hub for {ws.project_dir} on http://{host}:{port}/" + (" (token required)" if token else ""), err=True)
    stop = threading.Event()
    ops.keep_sweeps_controlled(ws, stop)  # the controllers of sweeps whose own died run in here
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        stop.set()


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
