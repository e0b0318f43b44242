"""A target and a training task from another package: each one file plus one entry point line, and then the
whole CLI works with them (render, check, launch, status, stop; a local training run to the end) with no change
to the launcher, the contract or the trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spottrain_contract.job import RECIPE_ENV, RunState
from spottrain_contract.recipe import from_shipped

PROJECT = Path(__file__).resolve().parents[2]
PLUGINS = PROJECT / "tests" / "plugins"
ENTRY_POINTS = """\
[spottrain.targets]
toy = toy_target

[spottrain.tasks]
toy = toy_task:SPEC
"""
TOY_RECIPE = """\
# A toy stage on the toy task:  launch recipe toy --target local
name: toy-regression
task: toy
image: python:3.11-slim
resources: {accelerator: A100, gpus: 1}
code: {repo: github.com/acme/toy}
mlflow: {experiment: toy, run_name: toy-regression}
train:
  features: 3
  samples: 64
  batch: {per_gpu: 8, grad_accum: 1}
  epochs: 3
  log_every_steps: 1
  optim: {lr: 0.1}
  schedule: {warmup_ratio: 0.0, decay: constant}
  deepspeed: {zero_stage: 0, precision: fp32}
  checkpoint: {uri: runs/store, local_dir: runs/local, every_steps: 8, keep: 2}
  eval: {every_steps: 8}
profiles:
  local: {resources.gpus: 1}
"""


@pytest.fixture
def plugged(tmp_path) -> dict:
    """A project with a toy recipe, and an environment where a package registers the toy target and task (its
    dist-info holds the entry points, as `pip install` would leave it)."""
    site = tmp_path / "site"
    dist_info = site / "toy_plugins-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "recipes" / "toy.yaml").write_text(TOY_RECIPE)
    platform = tmp_path / "platform"
    platform.mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "TOY_PLATFORM_DIR": str(platform),
           "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {"env": env, "project": project, "platform": platform}


def launch(plugged: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], cwd=plugged["project"], env=plugged["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_a_plugged_target_renders_the_shipped_recipe_of_a_plugged_task(plugged, monkeypatch):
    for path in plugged["env"]["PYTHONPATH"].split(os.pathsep)[:2]:
        monkeypatch.syspath_prepend(path)  # this process reads the shipped recipe as the trainer would
    done = launch(plugged, "render", "toy", "--target", "toy", "--override", "train.features=5")
    assert done.returncode == 0, done.stderr
    assert "target     toy: 1 toy GPUs" in done.stderr
    shipped = from_shipped(json.loads(done.stdout)["env"][RECIPE_ENV], RECIPE_ENV)
    assert (shipped.recipe.task, shipped.recipe.train.features, shipped.overrides) == ("toy", 5, ("train.features=5",))


def test_a_plugged_tasks_options_are_validated_like_any_recipe_key(plugged):
    done = launch(plugged, "render", "toy", "--target", "toy", "--override", "train.features=0")
    assert (done.returncode, done.stderr.strip()) == (2, "error: --override: train.features: expected 1–1000000000, "
                                                         "got 0")


def test_check_and_list_include_the_plugged_target(plugged):
    check = launch(plugged, "check", "--target", "toy", "--target", "local")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok    toy × toy" in check.stdout.splitlines()
    table = launch(plugged, "list").stdout.splitlines()
    assert table[1].split()[:2] == ["toy", "toy"] and "toy" in table[1].split()[6].split(",")


def test_an_unknown_target_lists_the_plugged_ones(plugged):
    done = launch(plugged, "render", "toy", "--target", "tyo")
    assert done.stderr.strip() == ("error: unknown target 'tyo': did you mean 'toy'? expected one of skypilot, vessl, "
                                   "local, toy")


def test_a_plugged_target_launches_reports_and_stops_through_the_runner(plugged):
    launched = launch(plugged, "recipe", "toy", "--target", "toy", "--run-id", "toy-1", "--yes")
    assert launched.returncode == 0, launched.stderr
    assert json.loads((plugged["platform"] / "toy-1.json").read_text())["name"] == "toy-regression"
    assert launch(plugged, "status", "toy-1").stdout.splitlines()[1].split()[3] == "pending"
    (plugged["platform"] / "toy-1.state").write_text("running")
    assert launch(plugged, "status", "toy-1").stdout.splitlines()[1].split()[3] == "running"
    assert launch(plugged, "stop", "toy-1").stdout.strip() == "run toy-1 stopped"
    from launcher.registry import Registry

    assert Registry(plugged["project"]).get("toy-1").state is RunState.STOPPED


@pytest.mark.slow
def test_a_plugged_task_trains_here_to_the_end_on_the_shared_runtime(plugged):
    done = launch(plugged, "recipe", "toy", "--target", "local", "--run-id", "toy-local", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run toy-local finished at step 24/24" in done.stdout
    run = plugged["project"] / "runs" / "store" / "toy-local"
    assert (run / "final-hf" / "toy.pt").is_file()
    manifests = sorted(run.glob("step-*/MANIFEST.json"))
    first, last = (json.loads(m.read_text())["metrics"]["val/loss"] for m in (manifests[0], manifests[-1]))
    assert last < first / 10  # it learned the linear map
