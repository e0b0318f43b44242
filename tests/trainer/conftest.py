"""Fixtures of the trainer tests: fresh directories, the resume tests' reference runs and the runs launched to the end
that several modules judge (S3 and the MLflow server: tests/conftest.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def tmp_dirs(tmp_path) -> Callable[[str], Path]:
    """tmp_dirs("local") -> a new, empty directory under this test's tmp_path (a new one on every call)."""
    numbers = itertools.count()

    def make(name: str) -> Path:
        path = tmp_path / f"{name}-{next(numbers)}"
        path.mkdir()
        return path

    return make


@pytest.fixture
def project(tmp_path) -> Path:
    """A project of the real recipes, for `harness.launch` (runs, registry and logs under it)."""
    import shutil

    from tests.trainer.harness import PROJECT

    shutil.copytree(PROJECT / "recipes", tmp_path / "recipes")
    return tmp_path


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Callable[[int], "TrainingRun"]:
    """reference(zero_stage): the uninterrupted run of the resume tests (harness.resume_overrides) that every
    interrupted or differently placed run must match; built once per ZeRO stage for the whole session."""
    from tests.trainer.harness import TrainingRun, resume_overrides

    runs: dict[int, TrainingRun] = {}

    def get(zero_stage: int) -> TrainingRun:
        if zero_stage not in runs:
            run = TrainingRun(f"reference-zero{zero_stage}", tmp_path_factory.mktemp("reference"),
                              resume_overrides(zero_stage))
            assert run.run() == 0, run.last_log()
            runs[zero_stage] = run
        return runs[zero_stage]

    return get


@pytest.fixture(scope="session")
def launched(tmp_path_factory) -> Callable[[str, str], Path]:
    """launched(recipe, run_id): a project of the real recipes where `recipe`'s local profile was launched as run
    `run_id` to the end; one training per recipe for the whole session, shared by the tests that evaluate,
    predict with and register it (they add evaluation reports and inputs of their own; none changes the run)."""
    from tests.trainer.harness import launched_to_the_end

    projects: dict[tuple[str, str], Path] = {}

    def get(recipe: str, run_id: str) -> Path:
        if (recipe, run_id) not in projects:
            projects[recipe, run_id] = launched_to_the_end(tmp_path_factory.mktemp(f"{recipe}-project"), recipe,
                                                           run_id)
        return projects[recipe, run_id]

    return get
