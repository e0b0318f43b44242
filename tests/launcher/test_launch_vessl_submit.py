"""`launch recipe NAME --target vessl`: the document reaches the vessl CLI through a file only the user can read,
removed as soon as the CLI returns; inline secret values are in that file and nowhere else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from launcher.errors import LaunchError
from launcher.plan import plan_launch
from launcher.registry import Registry
from launcher.secrets import ResolvedSecrets
from launcher.targets import vessl

PROJECT = Path(__file__).resolve().parents[2]
SECRETS = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss: {{x}}\n|&",
           "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "s3cr3t/+=", "HF_TOKEN": "hf_abc"}

FAKE_VESSL = """#!/usr/bin/env python3
import json, os, stat, sys
path = sys.argv[sys.argv.index("-f") + 1]
record = {"argv": sys.argv[1:], "path": path, "mode": stat.S_IMODE(os.stat(path).st_mode),
          "document": open(path).read()}
open(os.environ["FAKE_VESSL_RECORD"], "w").write(json.dumps(record))
print("Created run 'verifiable-wmtp' #4242 (echo: " + os.environ.get("ECHO", "") + ")")
sys.exit(int(os.environ.get("FAKE_VESSL_EXIT", "0")))
"""


@pytest.fixture
def fake_vessl(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vessl").write_text(FAKE_VESSL)
    (bin_dir / "vessl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VESSL_RECORD", str(tmp_path / "record.json"))
    return tmp_path / "record.json"


def _plan(*overrides):
    return plan_launch("rho1", target="vessl", project_dir=PROJECT, run_id="rho1-test",
                       overrides=["code.repo=github.com/acme/wmtp", *overrides])


def test_inline_secrets_reach_vessl_in_a_private_file_that_is_removed(fake_vessl, tmp_path):
    record = vessl.launch(_plan("secrets_mode=inline"), ResolvedSecrets(SECRETS), tmp_path)
    seen = json.loads(fake_vessl.read_text())
    assert seen["argv"][:3] == ["run", "create", "-f"]
    assert seen["mode"] == 0o600
    assert not Path(seen["path"]).exists()
    env = yaml.safe_load(seen["document"])["env"]
    assert {name: env[name] for name in SECRETS} == SECRETS
    assert Registry(tmp_path).get("rho1-test").target == "vessl"
    assert "#4242" in record.handle["vessl_output"]


def test_platform_secrets_are_references_with_no_value_in_the_file(fake_vessl, tmp_path):
    vessl.launch(_plan(), ResolvedSecrets({}), tmp_path)
    env = yaml.safe_load(json.loads(fake_vessl.read_text())["document"])["env"]
    assert env["HF_TOKEN"] == {"secret": "HF_TOKEN"}


def test_a_failed_submission_is_one_line_without_secret_values_and_leaves_no_file(fake_vessl, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setenv("FAKE_VESSL_EXIT", "1")
    monkeypatch.setenv("ECHO", SECRETS["HF_TOKEN"])
    with pytest.raises(LaunchError) as raised:
        vessl.launch(_plan("secrets_mode=inline"), ResolvedSecrets(SECRETS), tmp_path)
    assert str(raised.value).startswith("vessl run create failed: ")
    assert SECRETS["HF_TOKEN"] not in str(raised.value)
    assert not Path(json.loads(fake_vessl.read_text())["path"]).exists()


def test_the_placeholder_repository_is_refused_before_anything_is_sent(fake_vessl, tmp_path):
    plan = plan_launch("rho1", target="vessl", project_dir=PROJECT, run_id="r")
    with pytest.raises(LaunchError, match=r"^recipes/rho1.yaml: code.repo: VESSL clones the code from git"):
        vessl.launch(plan, ResolvedSecrets({}), tmp_path)
    assert not fake_vessl.exists()


def test_a_missing_vessl_cli_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LaunchError, match=r"^the vessl CLI is not installed: `pip install -e '.\[vessl\]'`"):
        vessl.launch(_plan(), ResolvedSecrets({}), tmp_path)
