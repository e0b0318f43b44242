"""Fixtures of the launcher tests: a private HOME for every module, temporary projects, commit-free renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch_helpers import write_project


@pytest.fixture(scope="session")
def private_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module", autouse=True)
def _private_home(private_home):
    """`import sky` writes ~/.sky: keep it, and SkyPilot's usage reports, away from the real home.

    Module scope, so hypothesis tests can use it and tests outside tests/launcher never see it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(private_home))
        patch.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
        patch.delenv("LAUNCH_PROJECT_DIR", raising=False)
        yield private_home


@pytest.fixture
def no_git_commit(monkeypatch):
    """A plan reads the commit from git; this makes renders independent of the checkout."""
    import launcher.operations.launching
    import launcher.plan

    for module in (launcher.plan, launcher.operations.launching):
        monkeypatch.setattr(module, "code_version", lambda project_dir: None)


@pytest.fixture
def make_project(tmp_path):
    """make_project({"x.yaml": "..."}, base_edit=(old, new)) -> a fresh project directory under tmp_path."""
    made = []

    def make(recipes, base_edit=None) -> Path:
        made.append(None)
        return write_project(tmp_path / f"project{len(made)}", recipes, base_edit)

    return make


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A real PostgreSQL server for the session (see postgres.py). CI must have it: only a machine without
    initdb and outside CI (`CI` unset) skips the PostgreSQL half of the run-database tests."""
    import os

    from postgres import postgres_server, tool

    if tool("initdb") is None:
        if os.environ.get("CI"):
            pytest.fail("initdb not found: the run-database tests need PostgreSQL (apt-get install postgresql)")
        pytest.skip("initdb not found (PostgreSQL not installed): PostgreSQL run-database tests skipped")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty run database: the SQLite file a project gets by default, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'spottrain.db'}"
    from postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_admin_url"))
