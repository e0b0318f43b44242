"""`launch doctor`: every check passing against real services on 127.0.0.1 (moto's S3, an MLflow server with basic
auth, the VESSL API stand-in), then each one failing in turn with its one-line fix, and never a traceback."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from launch_helpers import copy_real_recipes, launch_env, launch_executable
from tests.trainer.mlflow_server import start_mlflow_server
from vessl_api import VesslApi

pytestmark = pytest.mark.slow  # an MLflow server takes 10-30 s to start

TOKEN = "vessl-token-doctor"
ROW = re.compile(r"^(\S.*?)\s{2,}([✓✗])\s+(.*)$")  # CHECK, mark, DETAIL


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), auth=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vessl():
    with VesslApi(token=TOKEN, organization="acme", projects=("wmtp",), clusters=("vessl-gcp-oregon",)) as api:
        yield api


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_real_recipes(tmp_path_factory.mktemp("doctor") / "project", ("rho1",))


@pytest.fixture
def healthy(mlflow, vessl, s3_bucket, private_home) -> dict:
    """The environment and overrides of a launch that has everything it needs."""
    env = {k: v for k, v in launch_env(private_home).items() if not k.startswith(("AWS_", "MLFLOW_", "VESSL_"))}
    env.update({"MLFLOW_TRACKING_USERNAME": mlflow.username, "MLFLOW_TRACKING_PASSWORD": mlflow.password,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": str(private_home / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(private_home / "none"),
                "HF_TOKEN": "hf_doctor", "VESSL_API_HOST": vessl.url, "VESSL_ACCESS_TOKEN": TOKEN,
                "VESSL_DEFAULT_ORGANIZATION": "acme", "VESSL_DEFAULT_PROJECT": "wmtp"})
    overrides = [f"mlflow.tracking_uri={mlflow.uri}", f"train.checkpoint.uri={s3_bucket.uri}",
                 f"train.checkpoint.endpoint_url={s3_bucket.endpoint_url}"]
    return {"env": env, "overrides": overrides}


def doctor(project, setup: dict, *, target: str = "vessl", env: dict = None, overrides=()) -> tuple[int, dict, str]:
    """(exit code, {check: (mark, detail)}, stderr) of `launch doctor rho1`."""
    args = [arg for o in [*setup["overrides"], *overrides] for arg in ("--override", o)]
    done = subprocess.run([launch_executable(), "doctor", "rho1", "--target", target, *args], cwd=project,
                          env={k: v for k, v in {**setup["env"], **(env or {})}.items() if v is not None},
                          capture_output=True, text=True, timeout=300)
    rows = {m[1]: (m[2], m[3]) for m in map(ROW.match, done.stdout.splitlines()[1:]) if m}
    return done.returncode, rows, done.stderr


def test_every_check_passes_when_the_launch_has_what_it_needs(project, healthy):
    code, rows, stderr = doctor(project, healthy)
    assert (code, stderr) == (0, ""), rows
    assert {name: mark for name, (mark, _) in rows.items()} == {"secrets": "✓", "checkpoint store": "✓",
                                                              "MLflow": "✓", "VESSL": "✓"}
    assert rows["VESSL"][1] == "signed in: organization acme, project wmtp"


@pytest.mark.parametrize(("failing", "change", "expected"), [
    ("secrets", {"env": {"HF_TOKEN": None}}, "missing HF_TOKEN: export them or add them to .env"),
    ("checkpoint store", {"overrides": ["train.checkpoint.uri=s3://no-such-bucket/ckpt"]},
     "cannot write to the checkpoint store s3://no-such-bucket/ckpt (NoSuchBucket: "),
    ("MLflow", {"env": {"MLFLOW_TRACKING_PASSWORD": "wrong"}}, "rejected the credentials: check "
                                                              "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ("MLflow", {"overrides": ["mlflow.tracking_uri=http://127.0.0.1:9"]}, "cannot reach http://127.0.0.1:9"),
    ("VESSL", {"env": {"VESSL_ACCESS_TOKEN": "expired"}}, "VESSL is not configured: "),
], ids=["secret", "store", "mlflow-password", "mlflow-unreachable", "vessl-token"])
def test_each_failing_check_says_how_to_fix_it_and_only_it_fails(project, healthy, failing, change, expected):
    code, rows, stderr = doctor(project, healthy, **change)
    assert (code, "Traceback" in stderr) == (1, False), stderr
    assert {name for name, (mark, _) in rows.items() if mark == "✗"} == {failing}
    assert expected in rows[failing][1]


def test_skypilot_without_an_enabled_cloud_fails_its_check(project, healthy, private_home):
    try:
        code, rows, stderr = doctor(project, healthy, target="skypilot")
    finally:  # `sky check` started SkyPilot's local API server: stop what this test started
        subprocess.run([os.path.join(os.path.dirname(launch_executable()), "sky"), "api", "stop"],
                       env=healthy["env"], capture_output=True, timeout=120)
    assert (code, "Traceback" in stderr) == (1, False)
    assert rows["SkyPilot"] == ("✗", "no cloud enabled: run `sky check` and follow its hint for the cloud that "
                                     "should run this recipe")
    assert rows["SkyPilot API server"] == ("✓", "started for this check, and left running: `sky api stop` stops it")


def test_each_row_shows_as_its_check_finishes(project, healthy):
    """A check that waits (an MLflow server that accepts and never answers) does not hold back the rows before
    it."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    args = [arg for o in [*healthy["overrides"], f"mlflow.tracking_uri=http://127.0.0.1:{silent.getsockname()[1]}"]
            for arg in ("--override", o)]
    env = {**healthy["env"], "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    with subprocess.Popen([launch_executable(), "doctor", "rho1", "--target", "vessl", *args], cwd=project, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as doctor:
        shown = [doctor.stdout.readline() for _ in range(3)]  # the header, secrets, the checkpoint store
        waiting = doctor.poll() is None
        doctor.kill()
    silent.close()
    assert [ROW.match(line)[1] for line in shown[1:]] == ["secrets", "checkpoint store"]
    assert waiting, "the rows came only when doctor ended"

