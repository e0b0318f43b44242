"""What each target's document says: the fields a platform acts on, and the run script the nodes execute."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import yaml
from hypothesis import assume, given, settings, strategies as st

from launch_helpers import PROJECT_DIR, plan_launch, render_for_display
from spottrain_contract import job as job_contract
from spottrain_contract.command import CommandRecipe
from launcher.errors import LaunchError, RecipeError
from spottrain_contract.recipe import NOT_SHIPPED, LoadedRecipe, from_shipped, load_recipe, recipe_names
from launcher.secrets import MaskedSecrets
from launcher.targets import get_target, skypilot, vessl

BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="no bash to run the job script with")


def run_job_script(script: str, tmp_path: Path, torchrun_body: str,
                   env: Optional[dict] = None) -> tuple[int, list[str]]:
    """Run a job script under bash, with `env` as the platform sets it, and `torchrun` (and `python`, which starts a
    command recipe's node wrapper) replaced by a function: (exit status, its argv). The recipe the trainers (or the
    wrapper) would read is left in tmp_path/recipe."""
    argv_file, recipe_file = tmp_path / "argv", tmp_path / "recipe"
    fake = "".join(f'{program}() {{ printf "%s\\0" "$@" > {shlex.quote(str(argv_file))}; '
                   f'printenv {job_contract.RECIPE_ENV} > {shlex.quote(str(recipe_file))}; {torchrun_body}; }}\n'
                   for program in ("torchrun", "python"))
    (tmp_path / "job.sh").write_text(fake + script)
    done = subprocess.run([BASH, str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, env={**(env or {}), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    return done.returncode, argv_file.read_bytes().decode().split("\0")[:-1]


def trainer_sees(config: dict, tmp_path: Path) -> tuple[list[str], LoadedRecipe]:
    """What the trainer of a SkyPilot task starts with: torchrun's argv and the recipe it resolves from its env."""
    _, argv = run_job_script(config["run"], tmp_path, "return 0", env=config["envs"])
    text = (tmp_path / "recipe").read_text()[:-1]  # printenv adds a newline
    return argv, from_shipped(text, job_contract.RECIPE_ENV)


def sky_config(name="baseline", **plan_args) -> dict:
    plan = plan_launch(name, target="skypilot", project_dir=PROJECT_DIR, run_id="target-run", **plan_args)
    document = skypilot.render(plan, MaskedSecrets(plan.recipe.secrets))
    skypilot.validate(document)
    return yaml.safe_load(document)


def same_settings(shipped, loaded) -> bool:
    """Every setting equal; the shipped recipe has its profile applied and drops the profiles and the sweep (ways to
    resolve a recipe, not settings of the one run a job trains)."""
    return shipped.model_dump(exclude=set(NOT_SHIPPED)) == loaded.model_dump(exclude=set(NOT_SHIPPED))


@pytest.fixture(scope="module")
def baseline_sky() -> dict:
    return sky_config()


# --- SkyPilot -----------------------------------------------------------------------------------------------------

def test_skypilot_recovers_on_the_preempted_exit_code(baseline_sky):
    assert baseline_sky["resources"]["job_recovery"]["recover_on_exit_codes"] == [job_contract.PREEMPTED_EXIT_CODE]


def test_skypilot_preempted_exit_code_is_75():
    assert job_contract.PREEMPTED_EXIT_CODE == 75


def test_skypilot_uses_spot(baseline_sky):
    assert baseline_sky["resources"]["use_spot"] is True


def test_skypilot_runs_the_recipe_image_as_a_docker_image(baseline_sky):
    assert baseline_sky["resources"]["image_id"] == "docker:pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel"


def test_skypilot_names_secrets_without_values(baseline_sky):
    assert baseline_sky["secrets"] == {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None,
                                       "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "HF_TOKEN": None}


def test_skypilot_envs_carry_the_run_id(baseline_sky):
    assert baseline_sky["envs"][job_contract.RUN_ID_ENV] == "target-run"


def test_skypilot_mounts_read_only_volumes_plainly_and_the_checkpoints_cached(baseline_sky):
    assert {path: mount["mode"] for path, mount in baseline_sky["file_mounts"].items()} == {
        "/workspace/storage/models": "MOUNT", "/workspace/storage/datasets": "MOUNT",
        "/workspace/storage/checkpoints": "MOUNT_CACHED"}


def test_skypilot_on_demand_recipe_turns_spot_off():
    assert sky_config(overrides=["resources.spot=false"])["resources"]["use_spot"] is False


def test_skypilot_sizing_sets_accelerators_and_nodes():
    resources_and_nodes = sky_config(gpus=8, nodes=2)
    assert (resources_and_nodes["resources"]["accelerators"], resources_and_nodes["num_nodes"]) == ("A100-80GB:8", 2)


def test_skypilot_volume_without_a_bucket_is_an_error():
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, run_id="r",
                       overrides=["volumes.scratch={mount: /scratch, vessl: 'volume://scratch'}"])
    with pytest.raises(LaunchError) as caught:
        skypilot.render(plan, MaskedSecrets(plan.recipe.secrets))
    assert str(caught.value) == ("recipes/baseline.yaml: volumes.scratch.skypilot: no bucket backs this volume on "
                                 "SkyPilot (expected an s3:// or gs:// URI)")


def test_skypilot_validation_rejects_a_task_skypilot_rejects(baseline_sky):
    """The real sky.Task.from_yaml_config runs: a key SkyPilot does not know fails validation."""
    broken = dict(baseline_sky, not_a_task_key=1)
    with pytest.raises(LaunchError, match=r"^SkyPilot rejects the rendered task: "):
        skypilot.validate(yaml.safe_dump(broken))


def test_skypilot_validation_rejects_an_accelerator_skypilot_would_accept(baseline_sky):
    broken = dict(baseline_sky, resources=dict(baseline_sky["resources"], accelerators="A1000:4"))
    with pytest.raises(LaunchError) as caught:
        skypilot.validate(yaml.safe_dump(broken))
    assert str(caught.value) == "skypilot task: resources.accelerators: unknown accelerator 'A1000'"


# --- VESSL --------------------------------------------------------------------------------------------------------

def vessl_plan(name="baseline", **plan_args):
    return plan_launch(name, target="vessl", project_dir=PROJECT_DIR, run_id="target-run", **plan_args)


def test_vessl_render_of_a_multi_node_recipe_is_an_error():
    plan = vessl_plan(nodes=2)
    with pytest.raises(LaunchError) as caught:
        vessl.render(plan, MaskedSecrets(plan.recipe.secrets))
    assert str(caught.value) == ("recipes/baseline.yaml: resources.nodes: VESSL runs are single-node here, got 2 "
                                 "(use --target skypilot for multi-node)")


def test_vessl_render_without_cluster_and_preset_is_an_error():
    plan = vessl_plan(overrides=["resources.vessl=null"])
    with pytest.raises(LaunchError, match=r"^recipes/baseline.yaml: resources.vessl: VESSL needs a cluster"):
        vessl.render(plan, MaskedSecrets(plan.recipe.secrets))


def test_vessl_platform_secrets_reference_vessl_stored_secrets():
    plan = vessl_plan()
    env = yaml.safe_load(vessl.render(plan, MaskedSecrets(plan.recipe.secrets)))["env"]
    assert {name: env[name] for name in plan.recipe.secrets} == {name: {"secret": name} for name in plan.recipe.secrets}


def test_vessl_checks_out_the_recipe_ref_shell_quoted():
    plan = vessl_plan(overrides=["code.ref=release; rm -rf /"])
    command = yaml.safe_load(vessl.render(plan, MaskedSecrets(plan.recipe.secrets)))["run"][0]["command"]
    assert command.splitlines()[0] == "git checkout 'release; rm -rf /'"


def test_vessl_validation_error_never_echoes_an_env_value():
    plan = vessl_plan()
    config = yaml.safe_load(vessl.render(plan, MaskedSecrets(plan.recipe.secrets)))
    config["env"]["HF_TOKEN"] = ["hf-leaked-value"]
    with pytest.raises(LaunchError) as caught:
        vessl.validate(yaml.safe_dump(config))
    assert str(caught.value).startswith("vessl run: env.HF_TOKEN: ") and "hf-leaked-value" not in str(caught.value)


def test_unknown_target_is_an_error():
    with pytest.raises(LaunchError) as caught:
        get_target("slurm")
    assert str(caught.value).startswith("unknown target 'slurm': expected one of skypilot, vessl")


# --- what both targets share ------------------------------------------------------------------------------------

def test_display_render_carries_the_checked_out_commit():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the project is not a git checkout")
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_DIR, capture_output=True, text=True)
    _, document = render_for_display("baseline", target="vessl", project_dir=PROJECT_DIR, run_id="r")
    run = yaml.safe_load(document)
    expected = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    assert run["env"][job_contract.GIT_COMMIT_ENV] == expected
    assert run["run"][0]["command"].startswith(f"git checkout {head.stdout.strip()}\n")


def test_a_profile_value_and_a_sizing_option_both_apply_the_option_winning():
    recipe = plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, profile="local", gpus=8).recipe
    assert (recipe.resources.gpus, recipe.train.max_steps) == (8, 40)


def test_run_ids_are_fresh_per_launch_and_start_with_the_recipe_name():
    first, second = (plan_launch("critic", target="skypilot", project_dir=PROJECT_DIR).run_id for _ in range(2))
    assert first != second and first.startswith("critic-") and second.startswith("critic-")


@needs_bash
@pytest.mark.parametrize("name", recipe_names(PROJECT_DIR))
def test_run_script_starts_the_trainer_on_the_recipe_the_launch_resolved(name, tmp_path):
    argv, shipped = trainer_sees(sky_config(name), tmp_path)
    if isinstance(shipped.recipe, CommandRecipe):  # the node wrapper, around torchrun and the script
        assert argv[:5] == ["-m", job_contract.TRAINER_MODULE, "command", "--", "torchrun"]
        assert argv[-len(shipped.recipe.argv):] == shipped.recipe.argv
    else:
        assert argv[argv.index("-m"):] == ["-m", job_contract.TRAINER_MODULE, "train"]
    assert (shipped.name, shipped.relpath) == (name, f"recipes/{name}.yaml")
    assert same_settings(shipped.recipe, load_recipe(name, project_dir=PROJECT_DIR).recipe)


@needs_bash
def test_the_shipped_recipe_carries_the_profile_and_overrides(tmp_path):
    config = sky_config(profile="local", gpus=2, overrides=["train.optim.lr=5e-5"])
    _, shipped = trainer_sees(config, tmp_path)
    assert (shipped.profile, shipped.overrides) == ("local", ("resources.gpus=2", "train.optim.lr=5e-5"))
    assert same_settings(shipped.recipe, load_recipe("baseline", project_dir=PROJECT_DIR, profile="local",
                                                     overrides=["resources.gpus=2", "train.optim.lr=5e-5"]).recipe)


NASTY_OVERRIDE = "mlflow.run_name=it's \"quoted\" $HOME `id` ; echo pwned\nsecond line \\ end"


@needs_bash
def test_override_with_quotes_spaces_and_newline_reaches_the_trainer_intact(tmp_path):
    _, shipped = trainer_sees(sky_config(overrides=[NASTY_OVERRIDE]), tmp_path)
    assert shipped.overrides[-1] == NASTY_OVERRIDE
    expected = load_recipe("baseline", project_dir=PROJECT_DIR, overrides=[NASTY_OVERRIDE]).recipe.mlflow.run_name
    assert shipped.recipe.mlflow.run_name == expected


@needs_bash
def test_vessl_command_with_a_nasty_override_is_valid_shell():
    plan = vessl_plan(overrides=[NASTY_OVERRIDE])
    command = yaml.safe_load(vessl.render(plan, MaskedSecrets(plan.recipe.secrets)))["run"][0]["command"]
    assert subprocess.run([BASH, "-n"], input=command, text=True, capture_output=True).returncode == 0


@needs_bash
def test_job_script_exits_with_the_code_the_trainer_wrote(tmp_path, baseline_sky):
    preempted = job_contract.PREEMPTED_EXIT_CODE
    status, _ = run_job_script(baseline_sky["run"], tmp_path,
                               f'echo {preempted} > "${job_contract.EXIT_FILE_ENV}"; return 1')
    assert status == preempted


@needs_bash
def test_job_script_exits_with_torchrun_status_when_the_trainer_wrote_none(tmp_path, baseline_sky):
    status, _ = run_job_script(baseline_sky["run"], tmp_path, "return 3")
    assert status == 3


OVERRIDE_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)


@needs_bash
@settings(max_examples=40, deadline=None)
@given(text=OVERRIDE_TEXT)
def test_any_override_text_reaches_the_trainer_argv_unchanged(tmp_path_factory, text):
    override = f"env.EXTRA={text}"
    try:
        config = sky_config(overrides=[override])
    except RecipeError:
        assume(False)  # text YAML reads as a list or mapping: not a valid env value, nothing to launch
    _, shipped = trainer_sees(config, tmp_path_factory.mktemp("job"))
    assert shipped.overrides[-1] == override
