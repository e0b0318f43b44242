"""`launch recipe NAME --gpus N` on SkyPilot, exercised up to the SDK boundary: the sky.Task handed to
sky.jobs.launch is checked field by field, and what the lifecycle verbs send back to SkyPilot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import runner
from launch_helpers import plan_launch
from launcher.registry import Registry
from launcher.secrets import MaskedSecrets
from launcher.targets import skypilot
from spottrain_contract.job import PREEMPTED_EXIT_CODE, RECIPE_ENV, RUN_ID_ENV, RunState
from spottrain_contract.recipe import from_shipped

PROJECT = Path(__file__).resolve().parents[2]
SECRET_VALUES = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss: {{x}}\n|&",
                 "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "s3cr3t/+=", "HF_TOKEN": "hf_abc"}


class SkyBoundary:
    """Stands at the SDK boundary: records what the launcher hands to SkyPilot's API."""

    def __init__(self):
        self.launched, self.cancelled = [], []

    def install(self, monkeypatch):
        import sky

        monkeypatch.setattr(sky.jobs, "launch", lambda task, name=None, **kw: self.launched.append((task, name))
                            or "launch-request")
        monkeypatch.setattr(sky.jobs, "cancel", lambda **kw: self.cancelled.append(kw) or "cancel-request")
        monkeypatch.setattr(sky, "stream_and_get", lambda request: ([42], None) if request == "launch-request"
                            else None)
        return self


@pytest.fixture
def boundary(monkeypatch):
    return SkyBoundary().install(monkeypatch)


@pytest.fixture
def submitted(boundary, tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT)  # SkyPilot resolves `workdir: .` against the launch directory
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT, gpus=8, nodes=2,
                       overrides=["train.optim.lr=5e-5"], run_id="baseline-test-run")
    record = runner.submit(Registry(tmp_path), plan)  # tmp_path: the registry's project
    (task, name), = boundary.launched
    return task, name, record, tmp_path


def test_the_task_asks_for_the_recipes_accelerators_per_node_and_nodes(submitted):
    task, _, _, _ = submitted
    (resources,) = task.resources
    assert resources.accelerators == {"A100-80GB": 8}
    assert task.num_nodes == 2


def test_the_task_runs_on_spot_with_recovery_on_the_preempted_exit_code(submitted):
    task, _, _, _ = submitted
    (resources,) = task.resources
    assert resources.use_spot is True
    recovery = resources.job_recovery
    assert recovery["strategy"] == "EAGER_NEXT_REGION"
    assert recovery["max_restarts_on_errors"] == 3
    assert recovery["recover_on_exit_codes"] == [PREEMPTED_EXIT_CODE]


def test_secret_values_travel_as_secrets_and_never_in_envs(submitted):
    task, _, _, _ = submitted
    assert {k: v.get_secret_value() for k, v in task.secrets.items()} == SECRET_VALUES
    assert not set(SECRET_VALUES) & set(task.envs)
    assert not any(value in str(v) for value in SECRET_VALUES.values() for v in task.envs.values())
    assert not any(value in task.run for value in SECRET_VALUES.values())


def test_the_run_id_names_the_job_and_reaches_the_trainer(submitted):
    task, name, record, _ = submitted
    assert task.name == "baseline-mtp"
    assert name == "baseline-test-run"
    assert task.envs[RUN_ID_ENV] == "baseline-test-run"
    shipped = from_shipped(task.envs[RECIPE_ENV], RECIPE_ENV)
    assert shipped.overrides == ("resources.gpus=8", "resources.nodes=2", "train.optim.lr=5e-5")


def test_the_launch_is_recorded_with_skypilots_job_id(submitted):
    _, _, record, project = submitted
    assert Registry(project).get("baseline-test-run").handle == {"job_id": 42}
    assert (record.target, record.state) == ("skypilot", RunState.LAUNCHING)


def test_stop_cancels_the_job_gracefully(submitted, boundary):
    _, _, record, project = submitted
    assert runner.stop(Registry(project), record) is RunState.STOPPED
    assert boundary.cancelled == [{"job_ids": [42], "graceful": True,
                                   "graceful_timeout": skypilot.STOP_GRACE_SECONDS}]
    assert Registry(project).get(record.run_id).state is RunState.STOPPED


def test_a_launch_refuses_masked_secrets(boundary, tmp_path):
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT, run_id="r")
    with pytest.raises(TypeError):
        skypilot.launch(plan, "document", MaskedSecrets(plan.recipe.secrets), None)
    assert boundary.launched == []


def test_status_with_skypilot_out_of_reach_shows_a_live_run_unknown_and_never_asks_about_an_ended_one(
        tmp_path, monkeypatch, private_home):
    """SkyPilot's own client against a port nothing listens on: a live run is `unknown` with one warning line, a
    finished one is listed from its record (asking a platform about ended runs costs a round trip each)."""
    import socket
    import time

    from click.testing import CliRunner

    from launcher.cli import cli
    from launcher.registry import RunRecord

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", f"http://127.0.0.1:{closed}")
    registry = Registry(tmp_path)
    for run_id, state, job in (("sky-live", RunState.RUNNING, 7), ("sky-done", RunState.FINISHED, 6)):
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="skypilot", state=state, started=time.time(),
                                store="s3://bucket/ckpt", local_dir="/ckpt", tracking_uri="", project=str(tmp_path),
                                handle={"job_id": job}))
    done = CliRunner(mix_stderr=False).invoke(cli, ["status", "--json"], env={"LAUNCH_PROJECT_DIR": str(tmp_path)})
    assert done.exit_code == 0, done.output
    states = {view["id"]: view["state"] for view in json.loads(done.stdout)}
    assert states == {"sky-live": "unknown", "sky-done": "finished"}
    warnings = done.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: sky-live: SkyPilot: "), warnings


def test_a_launch_with_skypilots_api_server_out_of_reach_is_one_line_and_leaves_no_record(tmp_path, private_home):
    """A real SkyPilot client, pointed at an API server nobody runs: one `error:` line, not its exception."""
    import subprocess

    from launch_helpers import copy_real_recipes, launch_env, launch_executable

    project = copy_real_recipes(tmp_path / "project", ("baseline",))
    env = {**launch_env(private_home), **SECRET_VALUES, "SKYPILOT_API_SERVER_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([launch_executable(), "recipe", "baseline", "--yes", "--run-id", "offline"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=180)
    assert (done.returncode, done.stderr.splitlines()) == (2, [
        "error: SkyPilot: launch failed: Could not connect to SkyPilot API server at http://127.0.0.1:9. Please "
        "ensure that the server is running. Try: curl http://127.0.0.1:9/api/health"]), done.stderr
    assert not Registry(project).exists("offline")


def test_a_person_s_stop_leaves_its_request_in_the_run_s_store_and_the_next_attempt_takes_it_back(
        boundary, s3_bucket, tmp_path, monkeypatch):
    """The trainer reads the request when the platform's SIGTERM comes (spottrain.preemption): the attempt is
    `stopped`, not `preempted`. A new attempt starts with none."""
    import sky

    from spottrain_contract import layout
    from spottrain_contract.store import open_store

    monkeypatch.chdir(PROJECT)
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sky.jobs, "queue", lambda **kw: "queue-request")
    monkeypatch.setattr(sky, "get", lambda request: [{"status": "CANCELLED"}])
    plan = plan_launch("baseline", target="skypilot", project_dir=PROJECT, run_id="stopped-run",
                       overrides=[f"train.checkpoint.uri={s3_bucket.uri}",
                                  f"train.checkpoint.endpoint_url={s3_bucket.endpoint_url}"])
    registry = Registry(tmp_path)
    record = runner.submit(registry, plan)
    store = open_store(s3_bucket.uri, s3_bucket.endpoint_url)
    key = f"stopped-run/{layout.STOP_REQUESTED}"
    assert store.get_bytes(key) is None
    assert runner.stop(registry, record) is RunState.STOPPED
    assert store.get_bytes(key) is not None and boundary.cancelled
    runner.submit(registry, plan)  # the run's next attempt
    assert store.get_bytes(key) is None
