"""The Tracker against a real `mlflow server`: basic auth, a sqlite store, artifacts proxied by the server to S3
(moto's server). What a user sees in MLflow: the run, its params and tags, every step once across a resume, a
clear error for wrong credentials, metrics that survive a server outage, artifacts in the bucket."""

from __future__ import annotations

import logging
import time

import pytest

from spottrain import tracking
from spottrain.tracking import Tracker, TrackingAuthError
from spottrain_contract.job import MLFLOW_RUN_ID_TAG as RUN_ID_TAG
from tests.trainer.mlflow_server import free_port, start_mlflow_server

pytestmark = pytest.mark.slow  # each `mlflow server` takes 10-30 s to start

EXPERIMENT = "weighted-mtp/test"
BUCKET = "mlflow-artifacts"
AWS_TEST_CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
PARAMS = {"train.optim.lr": "1e-05", "train.total_steps": "10", "model.name": "micro-mtp",
          "launch.overrides": "train.optim.lr=1e-05"}
TAGS = {"task": "baseline", "gpu": "H100", "gpus": "8"}


# --- servers -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, **AWS_TEST_CREDS).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, moto_endpoint):
    """`mlflow server --app-name basic-auth`, artifacts proxied to s3://BUCKET/artifacts on moto."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), auth=True,
                                 artifacts_destination=f"s3://{BUCKET}/artifacts", s3_endpoint=moto_endpoint)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def client_env(monkeypatch):
    """Only what each test sets reaches the MLflow client; Tracker's setdefault of the HTTP knobs stays in the
    test (monkeypatch restores them)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_S3_ENDPOINT_URL",
                 "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def as_admin(monkeypatch, mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.password)
    return mlflow_server


@pytest.fixture
def fail_fast(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


# --- helpers -----------------------------------------------------------------------------------------------------

def _tracker(uri: str, run_id: str, **kwargs) -> Tracker:
    kwargs.setdefault("system_metrics", False)
    return Tracker(uri=uri, experiment=EXPERIMENT, run_name="baseline-mtp", run_id=run_id, params=dict(PARAMS),
                   tags=dict(TAGS), **kwargs)


def _runs_tagged(client, run_id: str):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"experiment {EXPERIMENT!r} was not created"
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'")


def _history(client, mlflow_run_id: str, key: str) -> dict[int, list[float]]:
    """step -> every value logged at that step (a step logged twice shows two values)."""
    steps: dict[int, list[float]] = {}
    for metric in client.get_metric_history(mlflow_run_id, key):
        steps.setdefault(metric.step, []).append(metric.value)
    return steps


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


# --- 1. params and metrics land --------------------------------------------------------------------------------

def test_params_tags_and_every_metric_step_land_in_one_finished_run(as_admin, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    tracker = _tracker(as_admin.uri, "r1", system_metrics=True)
    for step in range(1, 6):
        tracker.log({"train/loss": 10.0 - step, "train/learning_rate": 1e-5}, step)
    # the system-metrics monitor logs on its own, from the run's start, as rank 0's node
    _wait_until(lambda: "system/node0/cpu_utilization_percentage" in tracker.client.get_run(
        tracker.mlflow_run_id).data.metrics, timeout=30, what="system metrics")
    tracker.close(status="FINISHED")

    client = tracker.client
    [run] = _runs_tagged(client, "r1")
    assert run.info.run_id == tracker.mlflow_run_id
    assert run.info.run_name == "baseline-mtp"
    assert run.info.status == "FINISHED" and run.info.end_time
    assert run.data.params == PARAMS
    assert {k: run.data.tags.get(k) for k in (*TAGS, RUN_ID_TAG)} == {**TAGS, RUN_ID_TAG: "r1"}
    assert _history(client, run.info.run_id, "train/loss") == {s: [10.0 - s] for s in range(1, 6)}
    assert _history(client, run.info.run_id, "train/learning_rate") == {s: [1e-5] for s in range(1, 6)}
    assert tracker.pending() == [] and tracker.buffered == 0


# --- 2. resume continues the same run ---------------------------------------------------------------------------

@pytest.mark.parametrize("found_by", ["tag", "checkpoint"])
def test_a_resumed_attempt_continues_the_same_run_and_logs_every_step_once(as_admin, found_by):
    """Attempt 1 logs steps 1..6 and is preempted (run left RUNNING). Attempt 2 restarts from step 3, so it
    recomputes 4..6: by tag (restarted before its first checkpoint, mlflow_run_id=None) or with the MLflow run id
    its checkpoint kept, it continues the same run and the run keeps attempt 1's points for 4..6."""
    run_id = f"r2-{found_by}"
    first = _tracker(as_admin.uri, run_id)
    for step in range(1, 7):
        first.log({"train/loss": float(step), "eval/loss": step / 10}, step)
    first.close(status=None)
    assert first.client.get_run(first.mlflow_run_id).info.status == "RUNNING"

    second = _tracker(as_admin.uri, run_id, mlflow_run_id=None if found_by == "tag" else first.mlflow_run_id)
    assert second.mlflow_run_id == first.mlflow_run_id
    for step in range(4, 11):
        second.log({"train/loss": step + 1000.0, "eval/loss": step / 10 + 1000}, step)
    second.close(status="FINISHED")

    client = second.client
    [run] = _runs_tagged(client, run_id)
    assert run.info.run_id == first.mlflow_run_id
    assert run.info.status == "FINISHED"
    assert run.data.params == PARAMS
    assert _history(client, run.info.run_id, "train/loss") == {
        s: [float(s) if s <= 6 else s + 1000.0] for s in range(1, 11)}
    assert _history(client, run.info.run_id, "eval/loss") == {
        s: [s / 10 if s <= 6 else s / 10 + 1000] for s in range(1, 11)}


def test_unsent_metrics_saved_in_a_checkpoint_are_sent_once_by_the_next_attempt(as_admin, monkeypatch):
    """The trainer saves pending() in every checkpoint and requeue()s it on resume: points attempt 1 never sent
    arrive once, points it did send are not repeated."""
    monkeypatch.setattr(tracking, "FLUSH_SECONDS", 3600.0)  # attempt 1's flusher is driven by hand
    first = _tracker(as_admin.uri, "r2-requeue")
    try:
        for step in range(1, 4):
            first.log({"train/loss": float(step)}, step)
        assert first.flush()
        for step in range(4, 7):
            first.log({"train/loss": float(step)}, step)
        saved = first.pending()  # what a checkpoint at step 6 holds; the process is then killed before a flush
        assert [m[3] for m in saved] == [4, 5, 6]

        second = _tracker(as_admin.uri, "r2-requeue", mlflow_run_id=first.mlflow_run_id)
        second.requeue(saved + [["train/loss", 99.0, 0, 2]])  # a stale point for a step the run has
        for step in range(7, 9):
            second.log({"train/loss": float(step)}, step)
        second.close(status="FINISHED")
    finally:
        first._stop.set()  # the killed attempt: its flusher ends without sending what it held

    assert _history(second.client, first.mlflow_run_id, "train/loss") == {s: [float(s)] for s in range(1, 9)}


def test_the_trainers_checkpoint_metric_is_not_duplicated_on_resume(as_admin):
    first = _tracker(as_admin.uri, "r2-system")
    for step in range(1, 7):
        first.log({"train/loss": float(step), "checkpoint/upload_retries": 0.0}, step)
    first.close(status=None)
    second = _tracker(as_admin.uri, "r2-system")
    for step in range(4, 9):
        second.log({"train/loss": float(step), "checkpoint/upload_retries": 0.0}, step)
    second.close(status="FINISHED")

    history = _history(second.client, second.mlflow_run_id, "checkpoint/upload_retries")
    assert history == {s: [0.0] for s in range(1, 9)}


# --- 3. wrong credentials ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("username,password", [("admin", "not-the-password"), ("nobody", "whatever"), (None, None)],
                         ids=["wrong-password", "unknown-user", "no-credentials"])
def test_rejected_credentials_stop_the_tracker_at_start_with_a_clear_message(mlflow_server, monkeypatch, fail_fast,
                                                                             username, password):
    if username:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    started = time.monotonic()
    with pytest.raises(TrackingAuthError) as raised:
        _tracker(mlflow_server.uri, "r3")
    message = str(raised.value)

    assert time.monotonic() - started < 15
    assert mlflow_server.uri in message
    assert "MLFLOW_TRACKING_USERNAME" in message and "MLFLOW_TRACKING_PASSWORD" in message
    assert "401" in message
    assert mlflow_server.password not in message
    if password:
        assert password not in message


def test_a_user_without_write_permission_is_told_so_at_start(mlflow_server, as_admin, monkeypatch, fail_fast):
    from mlflow.server.auth.client import AuthServiceClient

    _tracker(mlflow_server.uri, "r3-owner").close(status="FINISHED")  # the admin owns the experiment
    AuthServiceClient(mlflow_server.uri).create_user("reader", "reader-password")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-password")
    with pytest.raises(TrackingAuthError) as raised:
        _tracker(mlflow_server.uri, "r3-reader")
    assert "403" in str(raised.value) and EXPERIMENT in str(raised.value)
    assert "reader-password" not in str(raised.value)


# --- 4. server down ---------------------------------------------------------------------------------------------

def test_metrics_logged_while_the_server_is_down_arrive_once_it_is_up(tmp_path, fail_fast, caplog):
    caplog.set_level(logging.WARNING, logger="spottrain.tracking")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"

    started = time.monotonic()
    tracker = _tracker(uri, "r4")  # nothing listens yet: training goes on
    assert time.monotonic() - started < 10
    assert tracker.mlflow_run_id is None
    server = None
    try:
        for step in range(1, 6):
            tracker.log({"train/loss": float(step)}, step)
        _wait_until(lambda: tracker.buffered == 5, timeout=10, what="the failed flush to put the metrics back")
        assert [m[3] for m in tracker.pending()] == [1, 2, 3, 4, 5]
        assert "unreachable" in caplog.text and uri in caplog.text

        server = start_mlflow_server(tmp_path / "mlflow-plain", port=port)  # no auth, sqlite in tmp
        _wait_until(lambda: tracker.pending() == [], timeout=30, what="the flusher to deliver the buffered metrics")
        assert tracker.flush()
        assert "reachable again" in caplog.text
        for step in range(6, 9):
            tracker.log({"train/loss": float(step)}, step)
        tracker.close(status="FINISHED", timeout=20)

        [run] = _runs_tagged(tracker.client, "r4")
        assert run.info.run_id == tracker.mlflow_run_id
        assert run.info.status == "FINISHED"
        assert run.data.params == PARAMS
        assert run.data.tags["task"] == "baseline"
        assert _history(tracker.client, run.info.run_id, "train/loss") == {s: [float(s)] for s in range(1, 9)}
    finally:
        tracker.close(status=None, timeout=0)  # a second close is harmless; ends the flusher if the test failed
        if server:
            server.stop()


# --- 5. artifacts -----------------------------------------------------------------------------------------------

def test_artifacts_of_the_run_land_in_the_s3_bucket(as_admin, moto_endpoint, monkeypatch, tmp_path):
    """The server proxies artifacts to S3: the client needs only its MLflow credentials, no AWS ones."""
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    tracker = _tracker(as_admin.uri, "r5")
    report = tmp_path / "eval-report.json"
    report.write_text('{"eval/loss": 0.5}')
    tracker.client.log_artifact(tracker.mlflow_run_id, str(report), artifact_path="reports")
    tracker.close(status="FINISHED")

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **AWS_TEST_CREDS)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/").get("Contents", [])]
    [key] = [k for k in keys if tracker.mlflow_run_id in k and k.endswith("/reports/eval-report.json")]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == report.read_bytes()
    assert [a.path for a in tracker.client.list_artifacts(tracker.mlflow_run_id, "reports")] == \
        ["reports/eval-report.json"]


def test_a_checkpoint_from_another_tracking_store_starts_a_run_in_this_one(tmp_path):
    """A resumed job whose checkpoint names an MLflow run this store never had (a new local database)."""
    tracker = _tracker(f"sqlite:///{tmp_path}/fresh.db", "r7", mlflow_run_id="0123456789abcdef0123456789abcdef")
    tracker.log({"train/loss": 1.0}, 1)
    tracker.close(status="FINISHED")
    [run] = _runs_tagged(tracker.client, "r7")
    assert run.info.run_id == tracker.mlflow_run_id != "0123456789abcdef0123456789abcdef"
    assert _history(tracker.client, run.info.run_id, "train/loss") == {1: [1.0]}


def test_a_sweeps_cell_is_a_child_of_its_parent_run_from_its_creation_or_from_its_resume(tmp_path):
    """A cell's run names the sweep's parent run (`mlflow.parentRunId`): when it is created, and when a run created
    without one (before its sweep had a parent) is resumed with one."""
    from mlflow.tracking import MlflowClient

    from spottrain_contract.job import MLFLOW_PARENT_RUN_TAG, mlflow_experiment_id

    uri = f"sqlite:///{tmp_path}/sweep.db"
    client = MlflowClient(uri)
    parent = client.create_run(mlflow_experiment_id(client, EXPERIMENT, uri)).info.run_id
    _tracker(uri, "cell-a", parent_run_id=parent).close(status="FINISHED")
    _tracker(uri, "cell-b").close(status=None)
    assert MLFLOW_PARENT_RUN_TAG not in _runs_tagged(client, "cell-b")[0].data.tags
    _tracker(uri, "cell-b", parent_run_id=parent).close(status="FINISHED")
    children = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                  filter_string=f"tags.`{MLFLOW_PARENT_RUN_TAG}` = '{parent}'")
    assert sorted(run.data.tags[RUN_ID_TAG] for run in children) == ["cell-a", "cell-b"]
    assert all(run.data.params == PARAMS for run in children)
