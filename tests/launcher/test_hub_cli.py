"""`launch hub` costs the other commands nothing: the web stack loads only when the hub runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
WEB = {"fastapi", "starlette", "uvicorn", "plotly", "mlflow"}


@pytest.mark.parametrize("args", [["--help"], ["hub", "--help"]], ids=" ".join)
def test_the_cli_loads_no_web_stack_until_the_hub_runs(args, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "launcher.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    assert "launcher" in loaded
    assert loaded & WEB == set()
