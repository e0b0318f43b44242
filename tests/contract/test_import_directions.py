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


def is_module(name: str) -> bool:
    path = PROJECT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def launcher_imports(path: Path) -> set[str]:
    """Every launcher module a file imports, lazy imports inside functions included (`from launcher.x import y`
    counts as `launcher.x.y` where y is a module, else as `launcher.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("launcher."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "launcher":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if is_module(name) else node.module)
    found.discard("launcher")
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FACES = [PROJECT / "launcher" / "cli.py", *sorted((PROJECT / "launcher" / "hub").rglob("*.py"))]
# what a face may import: the operations and their requests, the view models, the errors, presentation helpers,
# and the hub's own
# (`.*`: the package and its modules)
FACE_MAY_IMPORT = ("launcher.operations.*", "launcher.requests", "launcher.hub.*", "launcher.views", "launcher.errors",
                   "launcher.views.tables", "launcher.views.console", "launcher.sweeps.status")


@pytest.mark.parametrize("face", FACES, ids=lambda path: str(path.relative_to(PROJECT)))
def test_the_faces_import_only_the_operations_views_errors_and_presentation(face):
    def allowed(name: str) -> bool:
        return any(name == rule.removesuffix(".*") or (rule.endswith(".*") and name.startswith(rule[:-1]))
                   for rule in FACE_MAY_IMPORT)

    below = {name for name in launcher_imports(face) if not allowed(name)}
    assert below == set()


def test_no_circle_in_the_launcher():
    """No launcher module reaches itself again through its imports, lazy ones included."""
    modules = {module_name(path): path for path in (PROJECT / "launcher").rglob("*.py")}
    graph = {name: {imported for imported in launcher_imports(path) if imported in modules and imported != name}
             for name, path in modules.items()}
    circles = []

    def visit(name: str, trail: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[name]):
            if nxt in trail:
                circles.append(" → ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, [*trail, nxt], done)
        done.add(name)

    finished: set[str] = set()
    for start in sorted(graph):
        if start not in finished:
            visit(start, [start], finished)
    assert circles == []


def parameter_counts(path: Path) -> dict[str, int]:
    """Each function's parameters (self and cls not counted; `**flags` counts one)."""
    counts = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            counts[node.name] = (len([a for a in named if a.arg not in ("self", "cls")]) + bool(args.vararg)
                                 + bool(args.kwarg))
    return counts


def test_no_launcher_function_takes_more_than_eight_parameters():
    """What a launch asks travels as one frozen request, not as a dozen keywords through every hop."""
    wide = {f"{path.relative_to(PROJECT)}:{name}": count for path in sorted((PROJECT / "launcher").rglob("*.py"))
            for name, count in parameter_counts(path).items() if count > 8}
    assert wide == {}


def test_no_production_code_patches_with_unittest_mock():
    users = [str(path.relative_to(PROJECT)) for room in ROOMS.values() for path in sorted(room.rglob("*.py"))
             if "unittest" in imported_packages(path)]
    assert users == []
