"""`launch eval` and `launch predict` as jobs: a run's own settings on one GPU of its target, the command that
uses its weights, and one-line refusals (the end-to-end runs are in tests/trainer/test_ranking_runs.py)."""

from __future__ import annotations

import time

import pytest
import yaml

from launch_helpers import copy_real_recipes, plan_launch, run_launch
from launcher.registry import Registry, RunRecord
from launcher.requests import JobKind
from launcher.secrets import MaskedSecrets
from launcher.targets import get_target
from launcher.weights import input_paths, job_overrides, plan_weights_job
from spottrain_contract.job import RunState


def registered(project, run_id: str, target: str, overrides=()) -> None:
    """A run of the ranking recipe as `launch recipe` records it."""
    plan = plan_launch("pairwise_ranking", target=target, project_dir=project, overrides=overrides, run_id=run_id)
    Registry(project).save(RunRecord(run_id=run_id, recipe="pairwise_ranking", target=target,
                                     state=RunState.FINISHED, started=time.time(), store="s3://b/runs",
                                     local_dir="/l", tracking_uri="", project=str(project),
                                     recipe_document=plan.loaded.shipped()))


def test_an_evaluation_is_a_one_gpu_job_of_the_run_with_its_settings_on_its_target(tmp_path):
    project = copy_real_recipes(tmp_path, ("pairwise_ranking",))
    registered(project, "ranker-1", "skypilot", overrides=("train.model.dropout=0.3", "resources.gpus=4"))
    plan = plan_weights_job(Registry(project), "ranker-1", JobKind.EVAL, ["--checkpoint", "best"], None)
    assert plan.target == "skypilot" and plan.run_id.startswith("ranker-1-eval-")
    assert plan.recipe.resources.gpus == 1 and plan.recipe.train.model.dropout == 0.3
    document = yaml.safe_load(get_target("skypilot").render(plan, MaskedSecrets(plan.recipe.secrets)))
    assert document["resources"]["accelerators"] == "L4:1"
    assert "-m spottrain eval --run-id ranker-1 --checkpoint best &" in document["run"]
    assert document["envs"]["SPOTTRAIN_RUN_ID"] == plan.run_id


def test_predict_inputs_are_absolute_here_and_node_paths_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert input_paths(["a.png", "/data/b.png"], "local") == [str(tmp_path / "a.png"), "/data/b.png"]
    assert input_paths(["a.png"], "skypilot") == ["a.png"]


def test_eval_and_predict_of_an_unknown_run_are_one_line_errors(tmp_path, private_home):
    project = copy_real_recipes(tmp_path, ("pairwise_ranking",))
    for args in (["eval", "nope"], ["predict", "nope", "a.png", "b.png"]):
        done = run_launch(*args, home=private_home, cwd=project)
        verb = args[0]
        assert (done.returncode, done.stderr.strip()) == (
            2, f"error: run nope is not in this project's registry (launch status lists them): {verb} needs the "
               f"settings it was launched with")


@pytest.fixture
def vlm_run(tmp_path, monkeypatch):
    """A project (the working directory) whose registry holds `vlm-1`, a finished vlm_ablation run on SkyPilot."""
    monkeypatch.chdir(tmp_path)
    project = copy_real_recipes(tmp_path, ("vlm_ablation",))
    plan = plan_launch("vlm_ablation", target="skypilot", project_dir=project, run_id="vlm-1")
    Registry(project).save(RunRecord(run_id="vlm-1", recipe="vlm_ablation", target="skypilot",
                                     state=RunState.FINISHED, started=time.time(), store="s3://b/runs",
                                     local_dir="/l", tracking_uri="", project=str(project),
                                     recipe_document=plan.loaded.shipped()))
    return project


def test_vlm_evaluation_options_become_overrides_of_the_run_s_recipe(vlm_run, tmp_path):
    project = vlm_run
    (tmp_path / "test.csv").write_text("url,query,annotation\n")  # a job here reads it: it must exist
    extra = job_overrides("vlm_lora", {"csv": "test.csv", "prompt_template": "Question: {query}\nAnswer:",
                                       "system_message": "Be brief.", "max_new_tokens": 32}, "local")
    assert extra[0] == f'train.data.test_csv="{tmp_path / "test.csv"}"'  # a path here, made absolute
    plan = plan_weights_job(Registry(project), "vlm-1", JobKind.EVAL, ["--checkpoint", "last"], "skypilot", extra)
    evaluation = plan.recipe.train.evaluation
    assert plan.recipe.train.data.test_csv == str(tmp_path / "test.csv")
    assert evaluation.prompt_template == "Question: {query}\nAnswer:" and evaluation.system_message == "Be brief."
    assert evaluation.generation.max_new_tokens == 32 and evaluation.batch_size == 8  # the rest as the run's


def test_a_job_option_the_task_does_not_declare_is_one_line_naming_those_it_does():
    from spottrain_contract.errors import UserError

    with pytest.raises(UserError) as caught:
        job_overrides("vlm_lora", {"temperature": 0.1}, "local")
    assert str(caught.value) == ("--option temperature: not an option of task vlm_lora's jobs (its options: csv, "
                                 "prompt_template, system_message, batch_size, max_new_tokens, model_id, model_type)")
    with pytest.raises(UserError, match=r"^--option csv: not an option of task baseline's jobs \(its options: "
                                        r"none\)$"):
        job_overrides("baseline", {"csv": "x.csv"}, "local")


def test_an_option_its_model_refuses_is_the_loaders_error(vlm_run):
    from launcher import operations as ops

    project = vlm_run
    request = ops.WeightsJobRequest(ops.JobKind.EVAL, "vlm-1", options=(("max_new_tokens", 0),))
    with pytest.raises(ops.UserError, match=r"train\.evaluation\.generation\.max_new_tokens"):
        ops.plan_job(ops.Workspace.open(project), request)


def test_a_weights_job_is_recorded_as_a_job_of_its_run(tmp_path):
    from launcher import runner
    from launcher.rundb.records import WeightsJobOf

    project = copy_real_recipes(tmp_path, ("pairwise_ranking",))
    launched = plan_launch("pairwise_ranking", target="local", project_dir=project, profile="local", run_id="r-1")
    registry = Registry(project)
    registry.save(RunRecord(run_id="r-1", recipe="pairwise_ranking", target="local", state=RunState.FINISHED,
                            started=time.time(), store="s", local_dir="/l", tracking_uri="", project=str(project),
                            recipe_document=launched.loaded.shipped()))
    plan = plan_weights_job(registry, "r-1", JobKind.PREDICT, ["a.png", "b.png"], None)
    record = runner._new_record(plan, get_target("local"), project, registry)
    assert WeightsJobOf.of(record) == WeightsJobOf(kind=JobKind.PREDICT, run_id="r-1")
    assert runner.run_view(registry, record, reachable=False).job_of == "r-1"
