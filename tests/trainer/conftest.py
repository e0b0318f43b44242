"""Fixtures of the trainer tests: fresh directories and the resume tests' reference runs (S3: tests/conftest.py)."""

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
