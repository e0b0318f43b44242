"""The house's direction: launcher → spottrain_contract ← spottrain. Neither half imports the other, the
contract imports neither, and the light CLI commands never load the trainer's heavy stack."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
ROOMS = {"launcher": PROJECT / "launcher", "spottrain": PROJECT / "src" / "spottrain",
         "spottrain_contract": PROJECT / "src" / "spottrain_contract"}
FORBIDDEN = {"launcher": {"spottrain"}, "spottrain": {"launcher"}, "spottrain_contract": {"launcher", "spottrain"}}
HEAVY = {"torch", "deepspeed", "boto3", "botocore", "transformers"}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every import statement in a file, lazy ones inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_no_room_imports_a_room_it_must_not(room):
    offenders = {str(path.relative_to(PROJECT)): sorted(imported_packages(path) & FORBIDDEN[room])
                 for path in sorted(ROOMS[room].rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_contract_is_torch_free():
    used = set().union(*(imported_packages(p) for p in ROOMS["spottrain_contract"].rglob("*.py")))
    assert used & {"torch", "deepspeed", "transformers", "numpy", "click", "jinja2", "sky"} == set()


def modules_loaded_by(args: list[str], tmp_path: Path) -> set[str]:
    """Top-level packages `python -X importtime -m launcher.cli ARGS` imported (from its report)."""
    env = {**os.environ, "HOME": str(tmp_path), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "launcher.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["list"], ["render", "baseline"], ["render", "verifiable",
                                                                                "--target", "vessl"], ["check"]],
                         ids=" ".join)
def test_light_commands_load_neither_torch_nor_boto3(args, tmp_path):
    loaded = modules_loaded_by(args, tmp_path)
    assert "launcher" in loaded  # the report was read
    assert loaded & HEAVY == set()


@pytest.mark.parametrize("args", [["--help"], ["list"]], ids=" ".join)
def test_commands_without_runs_load_no_database_driver(args, tmp_path):
    """The run database (SQLAlchemy, Alembic, psycopg) loads only for a command that reads or writes runs (the
    SkyPilot commands load SQLAlchemy for SkyPilot's own state)."""
    assert modules_loaded_by(args, tmp_path) & {"sqlalchemy", "alembic", "psycopg"} == set()
