"""The `launch` command as a user runs it: its entry point in this process (run_launch), and the installed console
script where a fresh process matters (what a command imports, the completion script, the environment it reads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from launch_helpers import PROJECT_DIR, copy_real_recipes, launch_env, launch_executable, run_launch, write_project
from launcher.targets import vessl


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return done.stderr.splitlines()


# --- launch list --------------------------------------------------------------------------------------------------

def test_list_shows_every_recipe_and_its_task(private_home):
    done = run_launch("list", home=private_home)
    rows = [line.split()[:2] for line in done.stdout.splitlines()[1:]]
    assert (done.returncode, rows) == (0, [["baseline", "baseline"], ["critic", "critic"],
                                           ["ddp_example", "command"], ["hf_trainer", "command"],
                                           ["lightning_example", "command"],
                                           ["pairwise_ranking", "pairwise_ranking"], ["rho1", "rho1"],
                                           ["verifiable", "verifiable"], ["vlm_ablation", "vlm_lora"]])


# --- launch render --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vessl_render(private_home, tmp_path_factory):
    output = tmp_path_factory.mktemp("render") / "baseline.vessl.yaml"
    return run_launch("render", "baseline", "--target", "vessl", "-o", str(output), home=private_home), output


def test_render_to_a_file_succeeds(vessl_render):
    done, _ = vessl_render
    assert (done.returncode, done.stdout) == (0, "")


def test_render_to_a_file_writes_a_valid_vessl_document(vessl_render):
    _, output = vessl_render
    vessl.validate(output.read_text())
    assert yaml.safe_load(output.read_text())["name"] == "baseline-mtp"


def test_render_prints_the_summary_with_the_effective_batch_to_stderr(vessl_render):
    done, _ = vessl_render
    assert "batch      4/GPU × grad-accum 4 × 4 GPUs = 64 effective" in error_lines(done)


def test_render_says_where_it_wrote(vessl_render):
    done, output = vessl_render
    assert error_lines(done)[-1] == f"wrote {output}"


@pytest.fixture(scope="module")
def sized_render(private_home):
    done = run_launch("render", "baseline", "--gpus", "8", "--nodes", "2", home=private_home)
    assert done.returncode == 0, done.stderr
    return done, yaml.safe_load(done.stdout)


def test_gpus_option_sets_the_accelerator_count(sized_render):
    assert sized_render[1]["resources"]["accelerators"] == "A100-80GB:8"


def test_nodes_option_sets_the_node_count(sized_render):
    assert sized_render[1]["num_nodes"] == 2


def test_sizing_options_change_the_effective_batch(sized_render):
    assert ("batch      4/GPU × grad-accum 4 × 16 GPUs = 256 effective (64 as the recipe gives it: the overrides "
            "change the global batch)") in error_lines(sized_render[0])


def test_sizing_options_reach_the_trainer_as_overrides(sized_render):
    from spottrain_contract.job import RECIPE_ENV
    from spottrain_contract.recipe import from_shipped

    shipped = from_shipped(sized_render[1]["envs"][RECIPE_ENV], RECIPE_ENV)
    assert shipped.overrides == ("resources.gpus=8", "resources.nodes=2")
    assert (shipped.recipe.resources.gpus, shipped.recipe.resources.nodes) == (8, 2)


def test_render_into_a_missing_directory_is_a_one_line_error(private_home, tmp_path):
    target = tmp_path / "no" / "such" / "dir.yaml"
    done = run_launch("render", "baseline", "--target", "vessl", "-o", str(target), home=private_home)
    assert (done.returncode, error_lines(done)[-1], "Traceback" in done.stderr) == (
        2, f"error: {target}: cannot write: No such file or directory", False)


# --- launch check ---------------------------------------------------------------------------------------------------

def test_check_passes_every_recipe_target_and_profile(private_home):
    done = run_launch("check", "--target", "skypilot", "--target", "vessl", home=private_home)
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "54 passed, 0 failed")


@pytest.fixture(scope="module")
def broken_check(private_home, tmp_path_factory):
    project = copy_real_recipes(tmp_path_factory.mktemp("broken"), names=("baseline",))
    (project / "recipes" / "broken.yaml").write_text(textwrap.dedent("""\
        extends: _base.yaml
        name: broken
        task: baseline
        mlflow: {run_name: broken}
        resources: {gpus: 0}
        train: {epochs: 1}
        """))
    return run_launch("check", "--target", "vessl", home=private_home, cwd=project)


def test_check_with_a_broken_recipe_exits_non_zero(broken_check):
    assert broken_check.returncode != 0


def test_check_prints_the_broken_recipe_with_its_message(broken_check):
    assert "FAIL  broken × -: recipes/broken.yaml: resources.gpus: expected 1–8, got 0" \
        in broken_check.stdout.splitlines()


def test_check_still_checks_the_good_recipes_and_counts_both(broken_check):
    lines = broken_check.stdout.splitlines()
    assert (lines[:2], lines[-1]) == (["ok    baseline × vessl", "ok    baseline × vessl × local"],
                                      "2 passed, 1 failed")


# --- bad input ------------------------------------------------------------------------------------------------------

BAD_INPUT = {
    "unknown recipe": (["render", "baselin"],
                       "error: unknown recipe 'baselin': did you mean 'baseline'? known recipes: baseline, critic, "
                       "ddp_example, hf_trainer, lightning_example, pairwise_ranking, rho1, verifiable, "
                       "vlm_ablation"),
    "malformed override": (["render", "baseline", "--override", "train.optim.lr"],
                           "error: --override: train.optim.lr: expected dotted.key=value, e.g. train.optim.lr=5e-5"),
    "bad override value": (["render", "baseline", "--override", "resources.gpus=0"],
                           "error: --override: resources.gpus: expected 1–8, got 0"),
    "missing profile": (["render", "baseline", "--profile", "cloud"],
                        "error: recipes/baseline.yaml: profiles.cloud: no such profile (this recipe has: local)"),
    "multi-node on vessl": (["render", "baseline", "--target", "vessl", "--nodes", "2"],
                            "error: recipes/baseline.yaml: resources.nodes: VESSL runs are single-node here, got 2 "
                            "(use --target skypilot for multi-node)"),
    "gpus out of range": (["render", "baseline", "--gpus", "9"], None),
    "unknown target": (["render", "baseline", "--target", "aws"], None),
    "missing recipe name": (["render"], None),
    "unknown command": (["deploy"], None),
    "unknown option": (["list", "--all"], None),
}


@pytest.mark.parametrize("args, expected", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_exits_2_with_one_error_line(args, expected, private_home):
    done = run_launch(*args, home=private_home)
    lines = error_lines(done)
    assert (done.returncode, len(lines), lines[0].startswith("error: "), "Traceback" in done.stderr) \
        == (2, 1, True, False), done.stderr
    assert expected is None or lines[0] == expected


def test_launch_outside_a_project_is_a_one_line_error(private_home, tmp_path):
    done = run_launch("list", home=private_home, cwd=tmp_path)
    assert (done.returncode, error_lines(done)) == (
        2, [f"error: no recipes/ directory in {tmp_path.resolve()} or any parent: run launch inside a project"])


def test_launch_finds_the_project_from_a_subdirectory(private_home):
    done = run_launch("list", home=private_home, cwd=PROJECT_DIR / "recipes")
    assert (done.returncode, done.stdout.splitlines()[1].split()[0]) == (0, "baseline")


def test_a_broken_recipe_is_blamed_on_its_file_by_the_cli(private_home, tmp_path):
    project = write_project(tmp_path, {"x.yaml": "extends: _base.yaml\nname: x\ntask: critic\n"})
    done = run_launch("render", "x", home=private_home, cwd=project)
    assert (done.returncode, error_lines(done)) == (2, ["error: recipes/x.yaml: mlflow.run_name: required key is missing",
                                                        "error: recipes/x.yaml: train.critic: required key is missing",
                                                        "error: recipes/x.yaml: train.epochs: required key is missing"])


# --- launch recipe --------------------------------------------------------------------------------------------------

def test_recipe_dry_run_prints_the_summary_then_the_document(private_home):
    done = run_launch("recipe", "baseline", "--target", "vessl", "--dry-run", home=private_home)
    summary, document = done.stdout.split("\n---\n", 1)
    vessl.validate(document)
    assert (done.returncode, summary.splitlines()[0]) == (0, "recipe     baseline (recipes/baseline.yaml)")


# --- startup cost -----------------------------------------------------------------------------------------------------

HELP_IMPORTS = """\
import sys
sys.argv = ["launch", "--help"]
from launcher.cli import main
try:
    main()
except SystemExit:
    pass
print("HEAVY", sorted(name for name in ("sky", "torch", "mlflow") if name in sys.modules))
"""


def test_help_imports_neither_sky_nor_torch_nor_mlflow(private_home):
    done = subprocess.run([sys.executable, "-c", HELP_IMPORTS], cwd=PROJECT_DIR, env=launch_env(private_home),
                          capture_output=True, text=True, timeout=60)
    assert ("Usage: launch" in done.stdout, done.stdout.splitlines()[-1]) == (True, "HEAVY []")


def no_aws(home) -> dict:
    """The CLI's environment with no AWS credentials and an S3 endpoint nothing listens on."""
    env = {k: v for k, v in launch_env(home).items() if not k.startswith("AWS_")}
    return {**env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_CONFIG_FILE": str(home / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "none")}


def test_a_dry_run_of_verifiable_reads_no_store_and_says_how_the_critic_is_found(private_home):
    done = subprocess.run([launch_executable(), "recipe", "verifiable", "--dry-run"], cwd=PROJECT_DIR,
                          env=no_aws(private_home), capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert ("critic     the best checkpoint of the newest completed critic run in s3://weighted-mtp-checkpoints/runs, "
            "looked up at launch (or --override train.verifiable.critic_checkpoint=URI)") in done.stdout.splitlines()


def test_a_launch_that_cannot_read_the_store_for_the_critic_says_so_in_one_line(private_home):
    done = subprocess.run([launch_executable(), "recipe", "verifiable"], cwd=PROJECT_DIR, env=no_aws(private_home),
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, error_lines(done)) == (2, [
        "error: recipes/verifiable.yaml: train.checkpoint.uri: cannot read s3://weighted-mtp-checkpoints/runs to find "
        "the critic checkpoint (NoCredentialsError: Unable to locate credentials)"])


def test_a_bad_chaos_spec_is_a_usage_error_and_launches_nothing(private_home, tmp_path):
    project = copy_real_recipes(tmp_path / "project", names=("baseline",))
    done = run_launch("recipe", "baseline", "--target", "local", "--chaos", "kills=two", home=private_home,
                      cwd=project)
    assert (done.returncode, len(error_lines(done))) == (2, 1)
    assert error_lines(done)[0].startswith("error: --chaos: expected kills=N[,signals=KILL+TERM][,every=LOW:HIGH]")
    assert not (project / "runs").exists()


def test_status_skips_a_corrupt_registry_file_with_a_warning(private_home, tmp_path):
    project = copy_real_recipes(tmp_path / "project", names=("baseline",))
    registry = project / "runs" / "registry"
    registry.mkdir(parents=True)
    (registry / "good.json").write_text(json.dumps({
        "run_id": "good", "recipe": "baseline", "target": "local", "state": "finished", "started": 0.0,
        "store": "s", "local_dir": str(tmp_path), "tracking_uri": "", "handle": {}}))
    (registry / "cut.json").write_text('{"run_id": "cut", "reci')
    done = run_launch("status", home=private_home, cwd=project)
    assert done.returncode == 0, done.stderr
    assert [line.split()[:4] for line in done.stdout.splitlines()[1:]] == [["good", "baseline", "local", "finished"]]
    assert error_lines(done) == ["warning: runs/registry/cut.json: not a run record (JSONDecodeError): skipped"]


def test_a_second_attempt_of_a_live_run_is_refused_naming_the_live_one(tmp_path):
    import os

    from launcher import runner
    from launch_helpers import plan_launch
    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import RunState

    project = copy_real_recipes(tmp_path / "project", names=("baseline",))
    live = RunRecord(run_id="busy", recipe="baseline", target="local", state=RunState.RUNNING, started=0.0,
                     store=str(tmp_path), local_dir=str(tmp_path), tracking_uri="", project=str(project),
                     handle={"supervisor_pid": os.getpid()})  # this very process stands for its live supervisor
    Registry(project).save(live)
    plan = plan_launch("baseline", target="local", project_dir=project, profile="local", run_id="busy")
    with pytest.raises(Exception) as refused:
        runner.submit(Registry(project), plan)
    assert str(refused.value) == ("run busy is live on local (running): stop it first (launch stop busy) or follow "
                                  "it (launch logs busy --follow)")
    assert Registry(project).get("busy") == live


# --- a resume trains the settings the run was launched with ---------------------------------------------------------

@pytest.fixture
def launched_run(tmp_path):
    """A project whose registry holds run `r1` of baseline, launched here with train.max_steps=200."""
    from launch_helpers import plan_launch
    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import RunState

    project = copy_real_recipes(tmp_path / "project", names=("baseline",))
    plan = plan_launch("baseline", target="local", project_dir=project, profile="local", run_id="r1",
                       overrides=["train.max_steps=200"])
    Registry(project).save(RunRecord(run_id="r1", recipe="baseline", target="local", state=RunState.STOPPED,
                                     started=0.0, store="s", local_dir=str(tmp_path), tracking_uri="",
                                     project=str(project), recipe_document=plan.loaded.shipped()))
    return project


def test_a_plain_resume_reuses_the_overrides_it_was_launched_with(launched_run, private_home):
    done = run_launch("recipe", "baseline", "--target", "local", "--run-id", "r1", "--dry-run", home=private_home,
                      cwd=launched_run)
    assert done.returncode == 0, done.stderr
    assert "overrides  train.max_steps=200" in done.stdout.splitlines()


def test_a_resume_with_changed_settings_is_refused_listing_each_difference(launched_run, private_home):
    done = run_launch("recipe", "baseline", "--target", "local", "--run-id", "r1", "--override",
                      "train.max_steps=200", "--override", "train.optim.lr=0.5", "--dry-run", home=private_home,
                      cwd=launched_run)
    assert (done.returncode, error_lines(done)) == (2, [
        "error: run r1 was launched with other settings (train.optim.lr: 0.001 → 0.5): resume without changing them "
        "(`launch recipe baseline --run-id r1` reuses the launch's overrides), or pass --allow-changes to train on "
        "with these"])


def test_an_allowed_change_travels_to_the_job_to_be_logged_at_the_resume(launched_run, private_home):
    from spottrain_contract.job import RECIPE_ENV
    from spottrain_contract.recipe import from_shipped

    done = run_launch("recipe", "baseline", "--target", "local", "--run-id", "r1", "--override",
                      "train.max_steps=200", "--override", "train.optim.lr=0.5", "--allow-changes", "--dry-run",
                      home=private_home, cwd=launched_run)
    assert done.returncode == 0, done.stderr
    summary, script = done.stdout.split("\n---\n", 1)
    assert "changes    train.optim.lr: 0.001 → 0.5 (since the launch; logged at the resume step)" in summary
    shipped = from_shipped(_exported(script, RECIPE_ENV), RECIPE_ENV)
    assert (shipped.changes, shipped.recipe.train.optim.lr) == (("train.optim.lr: 0.001 → 0.5",), 0.5)


def _exported(script: str, name: str) -> str:
    """The value a run script exports for `name`, as bash would set it."""
    done = subprocess.run(["bash", "-c", script.split("\nif [", 1)[0] + f'\nprintf %s "${name}"'],
                          capture_output=True, text=True, timeout=30)
    return done.stdout


def test_version_names_the_package_version_and_the_commit(private_home):
    from importlib.metadata import version

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True)
    done = run_launch("--version", home=private_home)
    assert done.returncode == 0
    assert done.stdout.startswith(f"launch {version('spottrain')} (commit {head.stdout.strip()}")


# --- --json: the models the hub's API returns -------------------------------------------------------------------------

def test_list_json_is_a_list_of_recipe_views(private_home):
    from pydantic import TypeAdapter

    from launcher.views import RecipeView

    done = run_launch("list", "--json", home=private_home)
    views = TypeAdapter(list[RecipeView]).validate_json(done.stdout)
    assert [(v.name, v.task, v.gpus, v.error) for v in views] == [
        ("baseline", "baseline", 4, None), ("critic", "critic", 4, None), ("ddp_example", "command", 4, None),
        ("hf_trainer", "command", 4, None), ("lightning_example", "command", 4, None),
        ("pairwise_ranking", "pairwise_ranking", 1, None), ("rho1", "rho1", 4, None),
        ("verifiable", "verifiable", 4, None), ("vlm_ablation", "vlm_lora", 1, None)]


def test_status_json_is_a_list_of_run_views(launched_run, private_home):
    from pydantic import TypeAdapter

    from launcher.views import RunView
    from spottrain_contract.job import RunState

    done = run_launch("status", "--json", home=private_home, cwd=launched_run)
    (view,) = TypeAdapter(list[RunView]).validate_json(done.stdout)
    assert (view.id, view.name, view.target, view.state, view.overrides) == (
        "r1", "baseline-mtp", "local", RunState.STOPPED, ["train.max_steps=200"])


def test_dry_run_json_is_a_plan_view_holding_the_same_document(private_home):
    from launcher.views import PlanView

    as_json = run_launch("recipe", "baseline", "--target", "vessl", "--dry-run", "--json", "--run-id", "j1",
                         home=private_home)
    as_text = run_launch("recipe", "baseline", "--target", "vessl", "--dry-run", "--run-id", "j1", home=private_home)
    view = PlanView.model_validate_json(as_json.stdout)
    assert (view.recipe, view.target, view.run_id, view.gpus, view.effective_batch) == ("baseline", "vessl", "j1", 4, 64)
    assert view.document == as_text.stdout.split("\n---\n", 1)[1]


# --- shell completion (bash) ----------------------------------------------------------------------------------------

def bash_completes(words: list[str], private_home) -> list[str]:
    """What bash offers after `words` (the last one being completed), through the script the README sources."""
    script = ('source <(_LAUNCH_COMPLETE=bash_source launch)\n'
              f'COMP_WORDS=({" ".join(words)}); COMP_CWORD={len(words) - 1}\n'
              '_launch_completion launch; printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**launch_env(private_home), "PATH": f"{Path(launch_executable()).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_commands_recipes_targets_and_pipelines(private_home):
    assert bash_completes(["launch", "rec"], private_home) == ["recipe"]
    assert bash_completes(["launch", "recipe", "ver"], private_home) == ["verifiable"]
    assert bash_completes(["launch", "render", "baseline", "--target", "v"], private_home) == ["vessl"]
    assert bash_completes(["launch", "pipeline", "w"], private_home) == ["wmtp"]


def test_a_refused_resume_leaves_the_runs_earlier_record(launched_run, monkeypatch):
    from launcher import runner
    from launch_helpers import plan_launch
    from launcher.registry import Registry
    from launcher.targets import local

    def refuse(*args):
        raise OSError("no torchrun here")

    monkeypatch.setattr(local, "launch", refuse)  # the platform refuses the submission
    before = Registry(launched_run).get("r1")
    plan = plan_launch("baseline", target="local", project_dir=launched_run, profile="local", run_id="r1",
                       overrides=["train.max_steps=200"])
    with pytest.raises(OSError):
        runner.submit(Registry(launched_run), plan)
    assert Registry(launched_run).get("r1") == before


# --- launch list on a narrow terminal; the targets it lists ------------------------------------------------------------

@pytest.mark.parametrize("columns, kept", [
    (80, ["RECIPE", "GPUS", "ACCELERATOR", "TARGETS", "PROFILES"]),  # nodes, spot, then the task go first
    (60, ["RECIPE", "GPUS", "ACCELERATOR", "TARGETS"])])  # then the profiles
def test_list_on_a_narrow_terminal_drops_the_least_important_columns_whole(private_home, monkeypatch, columns, kept):
    monkeypatch.setenv("COLUMNS", str(columns))
    lines = run_launch("list", home=private_home).stdout.splitlines()
    assert "…" not in "\n".join(lines) and max(map(len, lines)) <= columns
    assert lines[0].split() == kept
    assert lines[1].split()[0] == "baseline" and lines[1].split()[kept.index("TARGETS")] == "skypilot,vessl,local"


def test_list_names_local_among_the_targets_a_recipe_renders_for(private_home):
    done = run_launch("list", "--json", home=private_home)
    assert {tuple(view["targets"]) for view in json.loads(done.stdout)} == {("skypilot", "vessl", "local")}


def test_a_recipe_without_the_local_profile_does_not_list_local(tmp_path):
    """`--target local` applies the recipe's `local` profile: a recipe without one does not render there."""
    from launcher import catalog

    baseline = (PROJECT_DIR / "recipes" / "baseline.yaml").read_text()
    project = write_project(tmp_path, {"baseline.yaml": baseline}, base_edit=("\n  local:\n", "\n  tiny:\n"))
    (view,) = catalog.recipe_views(project)
    assert (view.profiles, view.targets) == (["tiny"], ["skypilot", "vessl"])


def test_a_target_that_refuses_the_recipe_under_its_default_profile_is_not_listed(monkeypatch):
    from launcher import catalog
    from launcher.targets import local

    monkeypatch.setattr(local, "unsupported", lambda recipe: "no" if recipe.resources.preferred_gpus == 2 else None)
    views = catalog.recipe_views(PROJECT_DIR)  # the local profile asks for 2 GPUs: refused under it, not bare
    assert {tuple(view.targets) for view in views} == {("skypilot", "vessl")}


def test_a_resume_without_a_target_continues_where_the_run_was_launched(launched_run, private_home):
    done = run_launch("recipe", "baseline", "--run-id", "r1", "--dry-run", home=private_home, cwd=launched_run)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("target     local: ") for line in done.stdout.splitlines())
    assert "overrides  train.max_steps=200" in done.stdout.splitlines()


def test_the_hint_of_a_refused_resume_does_what_it_says(launched_run, private_home):
    """The hint names a command that resumes the run as launched, where it ran (not a paid SkyPilot launch)."""
    import re
    import shlex

    refused = run_launch("recipe", "baseline", "--run-id", "r1", "--override", "train.optim.lr=0.5", "--dry-run",
                         home=private_home, cwd=launched_run)
    hint = re.search(r"\(`launch (recipe [^`]+)` reuses", refused.stderr).group(1)
    done = run_launch(*shlex.split(hint), "--dry-run", home=private_home, cwd=launched_run)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("target     local: ") for line in done.stdout.splitlines())


def test_a_local_run_prints_no_secrets_line_and_a_platform_run_names_them(private_home):
    local = run_launch("recipe", "baseline", "--target", "local", "--dry-run", home=private_home)
    platform = run_launch("recipe", "baseline", "--target", "skypilot", "--dry-run", home=private_home)
    assert not any(line.startswith("secrets ") for line in local.stdout.split("---")[0].splitlines())
    assert any(line.startswith("secrets    MLFLOW_TRACKING_USERNAME") for line in platform.stdout.splitlines())


def test_a_resume_on_other_gpus_keeps_the_global_batch_and_needs_no_allow_changes(launched_run, private_home):
    """GPUs are capacity, not settings: the launch's overrides stay, gradient accumulation keeps the global batch,
    and the summary says what changed."""
    done = run_launch("recipe", "baseline", "--run-id", "r1", "--gpus", "1", "--dry-run", home=private_home,
                      cwd=launched_run)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("---")[0].splitlines()
    assert "batch      2/GPU × grad-accum 4 × 1 GPUs = 8 effective" in lines
    assert ("capacity   resources.gpus: 2 → 1; train.batch.grad_accum: 2 → 4 (since the launch; the global batch "
            "of 8 kept)") in lines
    assert "overrides  train.max_steps=200 resources.gpus=1 train.batch.grad_accum=4" in lines


def test_a_resume_on_gpus_that_cannot_keep_the_global_batch_is_one_line(launched_run, private_home):
    done = run_launch("recipe", "baseline", "--run-id", "r1", "--gpus", "3", "--dry-run", home=private_home,
                      cwd=launched_run)
    assert (done.returncode, error_lines(done)) == (2, [
        "error: --gpus 3 --nodes 1: the run's global batch of 8 (per_gpu 2) cannot be kept on 3 GPUs: resume on a "
        "count that divides it, or pass --override train.batch.grad_accum=N --allow-changes"])


def test_a_missing_input_of_a_job_here_is_one_line_before_anything_starts(launched_run, private_home):
    predicted = run_launch("predict", "r1", "no-such-a.png", "no-such-b.png", home=private_home, cwd=launched_run)
    judged = run_launch("eval", "--lora-path", "no-such-adapter", "--recipe", "baseline", "--target", "local",
                        home=private_home, cwd=launched_run)
    assert (predicted.returncode, error_lines(predicted)) == (2, [
        "error: predict: no-such-a.png: no such file or directory (the job runs here, on local)"])
    assert (judged.returncode, error_lines(judged)) == (2, [
        "error: --lora-path: no-such-adapter: no such file or directory (the job runs here, on local)"])


def test_a_gpu_count_that_changes_the_global_batch_says_so_in_the_summary(private_home):
    changed = run_launch("recipe", "baseline", "--gpus", "3", "--dry-run", home=private_home)
    kept = run_launch("recipe", "baseline", "--gpus", "2", "--override", "train.batch.grad_accum=8", "--dry-run",
                      home=private_home)
    assert ("batch      4/GPU × grad-accum 4 × 3 GPUs = 48 effective (64 as the recipe gives it: the overrides "
            "change the global batch)") in changed.stdout.splitlines()
    assert "batch      4/GPU × grad-accum 8 × 2 GPUs = 64 effective" in kept.stdout.splitlines()
