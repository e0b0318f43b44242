"""`launch register`, `launch models` and `models:/NAME@ALIAS` against a real MLflow server with basic auth: a
version points at the run's weights in its store with their sha256 manifest and carries the lineage to rebuild
them; bad input is one line that registers nothing. (Trained runs registered and reloaded by alias:
tests/trainer/test_model_registry_runs.py.)"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import yaml

from launch_helpers import copy_real_recipes, launch_env, launch_executable, plan_launch
from launcher.registry import Registry, RunRecord
from spottrain_contract import layout
from spottrain_contract.job import RunState
from spottrain_contract.layout import FileEntry, Manifest
from tests.trainer.mlflow_server import start_mlflow_server

RUN = "wmtp-1"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), auth=True)
    try:
        yield server
    finally:
        server.stop()


def put(store, key: str, data: bytes) -> FileEntry:
    path = store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileEntry(path=key.split("/", 2)[2], size=len(data), sha256=layout.sha256_of(path))


def finished_run(project, run_id: str = RUN, *, complete: bool = True, register=None) -> None:
    """A baseline run of the local profile as a run here leaves it: two complete checkpoints (the second final),
    the final-hf/ export, BEST.json, COMPLETE.json, and its record."""
    store = project / "runs" / "store"
    for step, final in ((4, False), (8, True)):
        files = [put(store, f"{layout.step_prefix(run_id, step)}model.safetensors", b"w" * step)]
        manifest = Manifest(step=step, world_size=1, final=final, files=files, metrics={"val/loss": 1.0 / step})
        (store / layout.step_prefix(run_id, step) / layout.MANIFEST).write_bytes(manifest.to_json())
    put(store, f"{run_id}/{layout.FINAL_EXPORT}/model.safetensors", b"final weights")
    put(store, f"{run_id}/{layout.FINAL_EXPORT}/config.json", b"{}")
    (store / run_id / layout.BEST_POINTER).write_text(json.dumps({"step": 8}))
    if complete:
        (store / run_id / layout.RUN_COMPLETE).write_text(json.dumps({"step": 8}))
    overrides = [f"register.name={register}", "register.alias=champion"] if register else []
    plan = plan_launch("baseline", target="local", project_dir=project, profile="local", run_id=run_id,
                       overrides=["train.optim.lr=3e-4", *overrides])
    Registry(project).save(RunRecord(
        run_id=run_id, recipe="baseline", target="local",
        state=RunState.FINISHED if complete else RunState.STOPPED, started=time.time(), store=str(store),
        local_dir=str(project / "runs" / "local"), tracking_uri="", project=str(project),
        recipe_document=plan.loaded.shipped(), log=str(project / f"{run_id}.log")))


@pytest.fixture
def project(tmp_path, mlflow, monkeypatch):
    project = copy_real_recipes(tmp_path / "project", ("baseline",))
    monkeypatch.chdir(project)
    for name, value in {"MLFLOW_TRACKING_URI": mlflow.uri, "MLFLOW_TRACKING_USERNAME": mlflow.username,
                        "MLFLOW_TRACKING_PASSWORD": mlflow.password}.items():
        monkeypatch.setenv(name, value)
    finished_run(project)
    return project


def launch(project, *args: str):
    import subprocess

    return subprocess.run([launch_executable(), *args], cwd=project, env=launch_env(project / ".home"),
                          capture_output=True, text=True, timeout=120)


def test_a_registered_final_export_points_at_the_store_with_its_manifest_and_lineage(project, mlflow):
    done = launch(project, "register", RUN, "--name", "wmtp-a", "--alias", "champion")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"registered run {RUN} (final checkpoint, step 8) as models:/wmtp-a/1 (alias "
                                  f"champion: models:/wmtp-a@champion)")
    [model] = json.loads(launch(project, "models", "--json").stdout)
    [version] = model["versions"]
    assert (version["name"], version["version"], version["aliases"]) == ("wmtp-a", "1", ["champion"])
    assert (version["run_id"], version["checkpoint"], version["step"]) == (RUN, "final", 8)
    assert version["weights"] == f"{project}/runs/store/{RUN}/final-hf" and version["missing_files"] == []
    assert version["relaunch"] == ["baseline", "--profile", "local", "--override=train.optim.lr=3e-4"]
    from launcher.operations.models import lineage_document, logged_model_id
    from launcher.model_registry import ModelRef, version_of
    from launcher.registering import model_registry

    with model_registry(mlflow.uri, project) as registry:
        lineage = lineage_document(registry, version_of(registry, ModelRef("wmtp-a", "champion")))
    final = project / "runs" / "store" / RUN / "final-hf"
    assert {f["path"]: f["sha256"] for f in lineage["weights"]["files"]} == {
        p.name: layout.sha256_of(p) for p in final.iterdir()}
    assert lineage["run_id"] == RUN and lineage["commit"] == "unknown"  # no MLflow run: the tag is unknown


def test_eval_and_predict_by_name_resolve_to_the_run_and_its_checkpoint(project):
    assert launch(project, "register", RUN, "--name", "wmtp-b", "--checkpoint", "best").returncode == 0
    assert launch(project, "models", "models:/wmtp-b/1", "--alias", "champion").returncode == 0
    from launcher import operations as ops

    ws = ops.Workspace.open(project)
    assert ops.resolve_model(ws, "models:/wmtp-b@champion") == (RUN, "8")
    assert ops.resolve_model(ws, "models:/wmtp-b/1") == (RUN, "8")
    done = launch(project, "eval", "models:/wmtp-b@champion", "--target", "local")
    assert f"models:/wmtp-b@champion is run {RUN}, step 8" in done.stdout
    assert f"evaluating run {RUN} (8 checkpoint)" in done.stdout


def test_from_a_version_alone_launch_recipe_dry_run_reproduces_the_resolved_recipe(project, mlflow):
    assert launch(project, "register", RUN, "--name", "wmtp-c").returncode == 0
    [model] = json.loads(launch(project, "models", "wmtp-c", "--json").stdout)
    import mlflow as mlflow_api

    from launcher.model_registry import ModelRef, version_of
    from launcher.operations.models import logged_model_id
    from launcher.registering import model_registry

    with model_registry(mlflow.uri, project) as registry:
        version = version_of(registry, ModelRef("wmtp-c", version="1"))
        location = registry.client.get_logged_model(logged_model_id(version)).artifact_location
        stored = mlflow_api.artifacts.download_artifacts(f"{location}/{layout.LAUNCHED_RECIPE}",
                                                         dst_path=str(project / "got"), tracking_uri=mlflow.uri)
    stored = yaml.safe_load(open(stored))
    dry = launch(project, "recipe", *model["versions"][0]["relaunch"], "--target", "local", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    relaunched = json.loads(dry.stdout)
    assert stored["train"]["optim"]["lr"] == 3e-4
    assert _shipped_recipe(relaunched["document"]) == stored  # the same resolved recipe, origin included


def _shipped_recipe(script: str) -> dict:
    """The resolved recipe a local run script ships to its job (`export SPOTTRAIN_RECIPE='…'`)."""
    import shlex

    marker = "export SPOTTRAIN_RECIPE="
    lexer = shlex.shlex(script[script.index(marker) + len(marker):], posix=True)
    lexer.whitespace_split = True
    return yaml.safe_load(lexer.get_token())


@pytest.mark.parametrize(("args", "prepare", "expected"), [
    (["register", "nope", "--name", "m"], None, "error: no run 'nope' launched from this project"),
    (["register", "wmtp-2", "--name", "m"], "unfinished",
     "error: run wmtp-2 is stopped: only a finished run's model is registered"),
    (["register", RUN, "--name", "m"], "no-final-hf",
     f"error: run {RUN}: the store no longer holds its final-hf/ ("),
    (["register", RUN, "--name", "m", "--checkpoint", "4"], "partial-step",
     f"error: checkpoint 4 of run {RUN} is incomplete (no MANIFEST.json in "),
    (["register", RUN, "--name", "m", "--checkpoint", "8"], "missing-step-file",
     f"error: checkpoint 8 of run {RUN}: the store no longer holds 1 of its files (model.safetensors…): nothing "
     f"registered"),
    (["register", RUN, "--name", "bad/name"], None, "error: --name: expected letters, digits"),
    (["models", "models:/wmtp-a/99", "--alias", "champion"], None,
     "error: models:/wmtp-a/99: not in the model registry at "),
    (["eval", "models:/nothing@champion"], None, "error: models:/nothing@champion: not in the model registry at "),
], ids=["unknown-run", "unfinished", "missing-export", "incomplete-checkpoint", "missing-files", "bad-name",
        "alias-on-missing-version", "unknown-model"])
def test_bad_input_is_one_line_and_registers_nothing(project, mlflow, args, prepare, expected):
    store = project / "runs" / "store"
    if prepare == "unfinished":
        finished_run(project, "wmtp-2", complete=False)
    elif prepare == "no-final-hf":
        shutil.rmtree(store / RUN / "final-hf")
    elif prepare == "partial-step":
        (store / layout.step_prefix(RUN, 4) / layout.MANIFEST).unlink()
    elif prepare == "missing-step-file":
        (store / layout.step_prefix(RUN, 8) / "model.safetensors").unlink()
    before = launch(project, "models", "--json").stdout
    done = launch(project, *args)
    assert (done.returncode, len(done.stderr.strip().splitlines())) == (2, 1), done.stderr
    assert done.stderr.startswith(expected), done.stderr
    assert launch(project, "models", "--json").stdout == before


def test_a_version_whose_files_vanished_is_listed_as_such(project):
    assert launch(project, "register", RUN, "--name", "wmtp-d").returncode == 0
    (project / "runs" / "store" / RUN / "final-hf" / "config.json").unlink()
    [model] = json.loads(launch(project, "models", "wmtp-d", "--json").stdout)
    assert model["versions"][0]["missing_files"] == ["config.json"]
    table = launch(project, "models", "wmtp-d").stdout
    assert "MISSING 1 (config.json…)" in table


def test_a_recipe_s_register_is_done_when_the_run_is_seen_finished_and_its_failure_is_said(project, mlflow,
                                                                                         monkeypatch):
    from launcher.registering import REGISTERED, register_when_finished

    finished_run(project, "wmtp-3", register="wmtp-e")
    registry = Registry(project)
    register_when_finished(registry, registry.get("wmtp-3"))
    assert registry.get("wmtp-3").handle[REGISTERED] == "registered as models:/wmtp-e/1 (alias champion)"
    assert "run wmtp-3 registered as models:/wmtp-e/1" in (project / "wmtp-3.log").read_text()
    finished_run(project, "wmtp-4", register="wmtp-e")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    register_when_finished(registry, registry.get("wmtp-4"))
    said = registry.get("wmtp-4").handle[REGISTERED]
    assert said.startswith("not registered as wmtp-e: "), said
    assert said in (project / "wmtp-4.log").read_text()
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "wrong"


def test_the_hub_shows_a_model_s_versions_with_a_link_to_each_run(project, mlflow):
    from fastapi.testclient import TestClient

    from launcher.hub.app import create_app

    assert launch(project, "register", RUN, "--name", "wmtp-f", "--alias", "champion").returncode == 0
    hub = TestClient(create_app(project, mlflow_uri=mlflow.uri), base_url="http://127.0.0.1")
    page = hub.get("/models")
    assert page.status_code == 200
    assert 'id="model-wmtp-f"' in page.text and f'<a href="/runs/{RUN}">{RUN}</a>' in page.text
    assert "champion" in page.text and "in store" in page.text
