"""`launch register`, `launch models` and `models:/NAME@ALIAS` against a real MLflow server with basic auth: a
version points at the run's weights in its store with their sha256 manifest and carries the lineage to rebuild
them; bad input is one line that registers nothing. (Trained runs registered and reloaded by alias:
tests/trainer/test_model_registry_runs.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from launch_helpers import copy_real_recipes, plan_launch
from launcher.registry import Registry, RunRecord
from spottrain_contract import layout
from spottrain_contract.job import RunState
from spottrain_contract.layout import FileEntry, Manifest

RUN = "wmtp-1"  # the module's finished run: tests register it under names of their own, and none changes it


def put(store, key: str, data: bytes) -> FileEntry:
    path = store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileEntry(path=key.split("/", 2)[2], size=len(data), sha256=layout.sha256_of(path))


def finished_run(project, run_id: str = RUN, *, state: RunState = RunState.FINISHED, complete: bool = True,
                 register=None) -> None:
    """A baseline run of the local profile as a run here leaves it: two complete checkpoints (the second final),
    the final-hf/ export, BEST.json, COMPLETE.json (unless not `complete`), and its record in `state`."""
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
        run_id=run_id, recipe="baseline", target="local", state=state, started=time.time(), store=str(store),
        local_dir=str(project / "runs" / "local"), tracking_uri="", project=str(project),
        recipe_document=plan.loaded.shipped(), log=str(project / f"{run_id}.log")))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One project for the module (each test registers under model names of its own; one that breaks a run's
    store breaks a run of its own)."""
    project = copy_real_recipes(tmp_path_factory.mktemp("registry") / "project", ("baseline",))
    finished_run(project)
    return project


@pytest.fixture
def mlflow(project, mlflow_auth_server, monkeypatch):
    """The session's MLflow server as the registry `launch` finds (MLFLOW_TRACKING_URI, its credentials), in
    `project`."""
    monkeypatch.chdir(project)
    for name, value in {"MLFLOW_TRACKING_URI": mlflow_auth_server.uri,
                        "MLFLOW_TRACKING_USERNAME": mlflow_auth_server.username,
                        "MLFLOW_TRACKING_PASSWORD": mlflow_auth_server.password}.items():
        monkeypatch.setenv(name, value)
    return mlflow_auth_server


@pytest.fixture
def launch(mlflow, capsys, monkeypatch) -> Callable[..., subprocess.CompletedProcess]:
    """launch(*args): the `launch` entry point run in this process as the shell runs it (its argv, its exit code,
    its stdout and stderr): a subprocess would spend seconds importing MLflow for every command."""
    from launcher.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["launch", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def registered_versions(mlflow) -> list[tuple[str, str]]:
    """Every version in the registry: (name, version)."""
    from launcher.registering import model_registry

    with model_registry(mlflow.uri, Path(".")) as registry:
        return sorted((v.name, v.version) for v in registry.client.search_model_versions())


def test_a_registered_final_export_points_at_the_store_with_its_manifest_and_lineage(project, mlflow, launch):
    done = launch("register", RUN, "--name", "wmtp-a", "--alias", "champion")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"registered run {RUN} (final checkpoint, step 8) as models:/wmtp-a/1 (alias "
                                  f"champion: models:/wmtp-a@champion)")
    [model] = json.loads(launch("models", "wmtp-a", "--json").stdout)
    [version] = model["versions"]
    assert (version["name"], version["version"], version["aliases"]) == ("wmtp-a", "1", ["champion"])
    assert (version["run_id"], version["checkpoint"], version["step"]) == (RUN, "final", 8)
    assert version["weights"] == f"{project}/runs/store/{RUN}/final-hf" and version["missing_files"] == []
    assert version["relaunch"] == ["baseline", "--profile", "local", "--override=train.optim.lr=3e-4"]
    from launcher.model_registry import ModelRef, version_of
    from launcher.operations.models import lineage_document
    from launcher.registering import model_registry

    with model_registry(mlflow.uri, project) as registry:
        lineage = lineage_document(registry, version_of(registry, ModelRef("wmtp-a", "champion")))
    final = project / "runs" / "store" / RUN / "final-hf"
    assert {f["path"]: f["sha256"] for f in lineage["weights"]["files"]} == {
        p.name: layout.sha256_of(p) for p in final.iterdir()}
    assert lineage["run_id"] == RUN and lineage["commit"] == "unknown"  # no MLflow run: the tag is unknown


def test_eval_and_predict_by_name_read_the_registry_launch_models_reads(project, mlflow, launch, monkeypatch):
    """The version's run and checkpoint step, from the registry --mlflow names, else MLFLOW_TRACKING_URI, else
    where the project's newest run logged. (A job launched by name: tests/trainer/test_model_registry_runs.py.)"""
    from launcher import operations as ops

    assert launch("register", RUN, "--name", "wmtp-b", "--checkpoint", "best").returncode == 0
    assert launch("models", "models:/wmtp-b/1", "--alias", "champion").returncode == 0
    ws = ops.Workspace.open(project)
    assert ops.resolve_model(ws, "models:/wmtp-b@champion") == (RUN, "8")
    assert ops.resolve_model(ws, "models:/wmtp-b/1") == (RUN, "8")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # and the project's runs logged to no server
    for command in (["eval", "models:/wmtp-b@champion"], ["predict", "models:/wmtp-b@champion", "a.png"]):
        assert launch(*command).stderr == ("error: no MLflow server known here: name it with --mlflow URI (or set "
                                           "MLFLOW_TRACKING_URI)\n")
        # resolved by --mlflow before the job is planned: a target that does not exist stops it there
        done = launch(*command, "--mlflow", mlflow.uri, "--target", "nowhere")
        assert done.stdout == f"models:/wmtp-b@champion is run {RUN}, step 8\n"
        assert (done.returncode, done.stderr.startswith("error: unknown target 'nowhere'")) == (2, True), done.stderr


def test_from_a_version_alone_launch_recipe_dry_run_reproduces_the_resolved_recipe(project, mlflow, launch):
    assert launch("register", RUN, "--name", "wmtp-c").returncode == 0
    [model] = json.loads(launch("models", "wmtp-c", "--json").stdout)
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
    dry = launch("recipe", *model["versions"][0]["relaunch"], "--target", "local", "--dry-run", "--json")
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


def _remove_final_export(store: Path, run_id: str) -> None:
    shutil.rmtree(store / run_id / layout.FINAL_EXPORT)


def _remove_step_manifest(store: Path, run_id: str) -> None:
    (store / layout.step_prefix(run_id, 4) / layout.MANIFEST).unlink()


def _remove_step_file(store: Path, run_id: str) -> None:
    (store / layout.step_prefix(run_id, 8) / "model.safetensors").unlink()


# Each case: the command ({run}: a run of its own, finished unless the case's run says otherwise), what is done to
# that run's store first, and the one line said.
@pytest.mark.parametrize(("args", "run", "breakage", "expected"), [
    (["register", "nope", "--name", "m"], {}, None, "error: no run 'nope' launched from this project"),
    (["register", "{run}", "--name", "m"], {"state": RunState.STOPPED}, None,
     "error: run {run} is stopped: only a finished run's model is registered"),
    (["register", "{run}", "--name", "m"], {"complete": False}, None,
     "error: run {run} has not finished (no COMPLETE.json in {store}/{run}): only a finished run's model is "
     "registered"),
    (["register", "{run}", "--name", "m"], {}, _remove_final_export,
     "error: run {run}: the store no longer holds its final-hf/ ({store}/{run}/final-hf/): nothing to register"),
    (["register", "{run}", "--name", "m", "--checkpoint", "4"], {}, _remove_step_manifest,
     "error: checkpoint 4 of run {run} is incomplete (no MANIFEST.json in {store}/{run}/step-00000004/): "),
    (["register", "{run}", "--name", "m", "--checkpoint", "8"], {}, _remove_step_file,
     "error: checkpoint 8 of run {run}: the store no longer holds 1 of its files (model.safetensors…): nothing "
     "registered"),
    (["register", RUN, "--name", "bad/name"], {}, None, "error: --name: expected letters, digits"),
    (["models", "models:/wmtp-a/99", "--alias", "champion"], {}, None,
     "error: models:/wmtp-a/99: not in the model registry at "),
    (["eval", "models:/nothing@champion"], {}, None, "error: models:/nothing@champion: not in the model registry at "),
], ids=["unknown-run", "stopped", "finished-without-COMPLETE", "missing-export", "incomplete-checkpoint",
        "missing-files", "bad-name", "alias-on-missing-version", "unknown-model"])
def test_bad_input_is_one_line_and_registers_nothing(project, mlflow, launch, request, args, run, breakage,
                                                    expected):
    run_id, store = f"bad-{request.node.callspec.id}", project / "runs" / "store"
    if "{run}" in args:
        finished_run(project, run_id, **run)
    if breakage:
        breakage(store, run_id)
    before = registered_versions(mlflow)
    done = launch(*(arg.format(run=run_id) for arg in args))
    assert (done.returncode, len(done.stderr.strip().splitlines())) == (2, 1), done.stderr
    assert done.stderr.startswith(expected.format(run=run_id, store=store)), done.stderr
    assert registered_versions(mlflow) == before


def test_a_version_whose_files_vanished_is_listed_as_such(project, mlflow, launch):
    finished_run(project, "vanishing")
    assert launch("register", "vanishing", "--name", "wmtp-d").returncode == 0
    (project / "runs" / "store" / "vanishing" / "final-hf" / "config.json").unlink()
    [model] = json.loads(launch("models", "wmtp-d", "--json").stdout)
    assert model["versions"][0]["missing_files"] == ["config.json"]
    table = launch("models", "wmtp-d").stdout
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


def test_the_hub_shows_a_model_s_versions_with_a_link_to_each_run(project, mlflow, launch):
    from fastapi.testclient import TestClient

    from launcher.hub.app import create_app

    assert launch("register", RUN, "--name", "wmtp-f", "--alias", "champion").returncode == 0
    hub = TestClient(create_app(project, mlflow_uri=mlflow.uri), base_url="http://127.0.0.1")
    page = hub.get("/models")
    assert page.status_code == 200
    assert 'id="model-wmtp-f"' in page.text and f'<a href="/runs/{RUN}">{RUN}</a>' in page.text
    assert "champion" in page.text and "in store" in page.text
