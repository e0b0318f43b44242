"""MLflow runs logged by other scripts into a recipe's experiment, listed read-only by the hub, against a real
`mlflow server` on 127.0.0.1: only the runs without our tag, with their state, step and loss; their curves; a 404
for any run outside the watched experiments; an empty list and a one-line warning when the server is out of reach."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest

from hub_helpers import client_for, hub_project
from launch_helpers import copy_real_recipes
from launcher import external_runs as external
from spottrain_contract.job import MLFLOW_RUN_ID_TAG, MLFLOW_SWEEP_ID_TAG
from tests.trainer.mlflow_server import free_port, start_mlflow_server

EXPERIMENT = "weighted-mtp/production"  # the baseline recipe's
EVIL_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(autouse=True)
def no_server_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory, mlflow_sqlite):
    workdir = tmp_path_factory.mktemp("mlflow")
    mlflow_sqlite(workdir / "mlflow.db")
    server = start_mlflow_server(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def logged(mlflow):
    """A script's run in the baseline's experiment (failed at step 10), a run of ours and a sweep parent of ours in
    the same experiment, and a script's run in an experiment no recipe names."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow.uri)
    ours_experiment = client.create_experiment(EXPERIMENT)
    now = int(time.time() * 1000)

    def run(experiment, name, tags=None, *, status="FINISHED", steps=0, params=()):
        """train/loss 2.0 - 0.1 × step at steps 1..`steps`, and one val/loss at half way."""
        made = client.create_run(experiment, run_name=name, tags=tags or {})
        metrics = [Metric("train/loss", 2.0 - 0.1 * step, now + step, step) for step in range(1, steps + 1)]
        if steps:
            metrics += [Metric("val/loss", 3.0, now + steps, steps // 2), Metric("grad_norm", 1.0, now, 1),
                        Metric("grad_norm", math.nan, now + 1, 2)]  # diverged
        client.log_batch(made.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params])
        client.set_terminated(made.info.run_id, status=status)
        return made.info.run_id

    return SimpleNamespace(
        script=run(ours_experiment, EVIL_NAME, {"mlflow.user": "alice", "mlflow.source.name": "by_hand.py"},
                   status="FAILED", steps=10, params=[("lr", "0.001"), ("note", "<b>bold</b>")]),
        ours=run(ours_experiment, "baseline-mtp", {MLFLOW_RUN_ID_TAG: "baseline-1"}, steps=3),
        sweep=run(ours_experiment, "sweep-1", {MLFLOW_SWEEP_ID_TAG: "sweep-1"}),
        elsewhere=run(client.create_experiment("someone/else"), "unrelated", steps=2))


@pytest.fixture
def project(tmp_path):
    return hub_project(tmp_path / "project")


@pytest.fixture
def client(project, mlflow, logged):
    with client_for(project, mlflow_uri=mlflow.uri) as client:
        yield client


def test_only_the_scripts_run_is_listed_read_only_with_its_state_step_and_loss(client, logged):
    listed = client.get("/api/external-runs")
    assert listed.status_code == 200, listed.text
    assert listed.json()["warning"] is None
    [run] = listed.json()["runs"]
    started = run.pop("started")
    assert run == {"id": f"mlflow:{logged.script}", "mlflow_run_id": logged.script, "name": EVIL_NAME,
                   "experiment": EXPERIMENT, "recipe": "baseline", "state": "failed", "step": 10,
                   "loss": pytest.approx(1.0), "user": "alice", "read_only": True}
    assert abs(started - time.time()) < 120


def test_its_page_shows_params_metrics_and_no_actions_with_the_name_as_text(client, logged):
    detail = client.get(f"/api/external-runs/{logged.script}").json()
    assert (detail["params"], detail["source"]) == ({"lr": "0.001", "note": "<b>bold</b>"}, "by_hand.py")
    assert detail["metrics"] == {"grad_norm": None, "train/loss": pytest.approx(1.0), "val/loss": 3.0}
    page = client.get(f"/mlflow-runs/{logged.script}")
    assert page.status_code == 200
    html = page.text
    assert EVIL_NAME not in html and "<b>bold" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<td>nan</td>" in html and "NaN" not in html  # no NaN in the page's data: JSON.parse would refuse it
    assert not any(f'id="{button}"' in html for button in ("stop", "clone", "launch-draft", "edit"))


def test_the_metrics_route_serves_its_curves(client, logged):
    curves = client.get(f"/api/external-runs/{logged.script}/metrics").json()
    assert curves["train/loss"] == [[step, pytest.approx(2.0 - 0.1 * step)] for step in range(1, 11)]
    assert curves["val/loss"] == [[5, 3.0]]
    assert curves["grad_norm"] == [[1, 1.0], [2, None]]  # JSON has no NaN: a gap in the curve


@pytest.mark.parametrize("which", ["ours", "sweep", "elsewhere", "unknown", "upper", "not-hex", "traversal"])
def test_a_run_outside_the_watched_experiments_or_not_an_mlflow_id_is_404(client, logged, which):
    mlflow_run_id = {"unknown": "0" * 32, "upper": logged.script.upper(), "not-hex": "g" * 32,
                     "traversal": "..%2F..%2Fexperiments"}.get(which) or getattr(logged, which)
    for route in (f"/api/external-runs/{mlflow_run_id}", f"/api/external-runs/{mlflow_run_id}/metrics",
                  f"/mlflow-runs/{mlflow_run_id}"):
        answer = client.get(route)
        assert answer.status_code == 404, (route, answer.text)


def test_the_list_is_kept_a_few_seconds(client, monkeypatch):
    asked = []
    listing = external.ExternalRuns._list
    monkeypatch.setattr(external.ExternalRuns, "_list", lambda self: asked.append(1) or listing(self))
    for _ in range(3):
        assert len(client.get("/api/external-runs").json()["runs"]) == 1
    assert len(asked) == 1


def test_a_server_without_is_null_in_filters_still_lists_only_the_scripts_run(client, mlflow, logged, monkeypatch):
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(mlflow.uri).get_experiment_by_name(EXPERIMENT).experiment_id
    accepted = MlflowClient(mlflow.uri).search_runs([experiment], filter_string=external.NOT_OURS)
    assert [run.info.run_id for run in accepted] == [logged.script]  # this server takes the filter as it is
    monkeypatch.setattr(external, "NOT_OURS", "tags.`spottrain.run_id` IS NOTHING")  # refused, as IS NULL by old ones
    assert [run["mlflow_run_id"] for run in client.get("/api/external-runs").json()["runs"]] == [logged.script]


def test_a_server_out_of_reach_is_an_empty_list_and_a_warning_at_once(project):
    uri = f"http://127.0.0.1:{free_port()}"
    with client_for(project, mlflow_uri=uri) as client:
        started = time.monotonic()
        listed = client.get("/api/external-runs")
        assert time.monotonic() - started < 5
        assert listed.status_code == 200
        assert listed.json()["runs"] == []
        warning = listed.json()["warning"]
        assert warning.startswith(f"MLflow at {uri} could not be read (") and "\n" not in warning
        missing = client.get(f"/api/external-runs/{'a' * 32}/metrics")
        assert missing.status_code == 503 and missing.json()["error"].startswith(f"MLflow at {uri} could not be read")


def test_without_a_server_nothing_is_listed_and_nothing_is_said(project):
    with client_for(project) as client:
        assert client.get("/api/external-runs").json() == {"runs": [], "warning": None}
        assert client.get(f"/mlflow-runs/{'a' * 32}").status_code == 404


def test_the_server_is_the_recipes_else_mlflow_tracking_uri_and_every_recipe_names_its_experiment(tmp_path,
                                                                                                  monkeypatch):
    project = copy_real_recipes(tmp_path / "project")
    assert external.watched(project) == []  # runs here log to their own SQLite stores
    (project / ".env").write_text("MLFLOW_TRACKING_URI=http://team-mlflow.invalid\n")
    project.joinpath(".env").chmod(0o600)
    experiments = {"weighted-mtp/production": "baseline, critic, rho1, verifiable", "mirip/ranking":
                   "pairwise_ranking", "vlm/lora-ablation": "vlm_ablation", "examples/ddp": "ddp_example",
                   "examples/hf-trainer": "hf_trainer", "examples/lightning": "lightning_example"}
    assert external.watched(project) == [external.Watched("http://team-mlflow.invalid", experiments)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env.invalid")
    assert [w.uri for w in external.watched(project)] == ["http://from-env.invalid"]
    critic = project / "recipes" / "critic.yaml"
    critic.write_text(critic.read_text().replace("mlflow: {run_name: critic-pretrain}",
                                                 "mlflow: {run_name: critic-pretrain, tracking_uri: http://c.invalid}"))
    by_uri = {w.uri: w.experiments for w in external.watched(project)}
    assert by_uri["http://c.invalid"] == {"weighted-mtp/production": "critic"}
    assert [w.uri for w in external.watched(project, "http://flag.invalid")] == ["http://flag.invalid"]


def test_with_a_token_the_new_routes_need_it(project, mlflow, logged):
    with client_for(project, token="s3cret", mlflow_uri=mlflow.uri) as client:
        for route in ("/api/external-runs", f"/api/external-runs/{logged.script}",
                      f"/api/external-runs/{logged.script}/metrics", f"/mlflow-runs/{logged.script}"):
            assert client.get(route).status_code == 401, route
            assert client.get(route, headers={"Authorization": "Bearer s3cret"}).status_code == 200, route


def test_the_runs_page_has_the_read_only_table_filled_by_script(client):
    html = client.get("/").text
    assert 'id="external-runs"' in html and "/static/external.js" in html
    assert "Logged elsewhere (MLflow, read-only)" in html
    assert client.get("/static/external.js").status_code == 200
