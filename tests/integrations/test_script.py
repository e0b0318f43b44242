"""spottrain.integrations.script in this process: nothing outside spottrain, events and staging inside, and a
SIGTERM turned into a stop request."""

from __future__ import annotations

import os
import signal
import time

import pytest

from spottrain.integrations import script
from spottrain_contract.job import RUN_ID_ENV
from spottrain_contract.script import (CHECKPOINT_DIR_ENV, CONTROL_DIR_ENV, EVENTS_FILE, RESUME_DIR_ENV, STOP_FILE,
                                       read_events, staged_path)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """A process that has not attached nor caught SIGTERM yet; the SIGTERM handler restored afterwards."""
    for name, value in {"attached": False, "watching": False, "terminated": False, "previous": None}.items():
        monkeypatch.setattr(script._Process, name, value)
    monkeypatch.delenv("RANK", raising=False)
    original = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, original)


@pytest.fixture
def inside(tmp_path, monkeypatch):
    """The node contract's environment, as the wrapper sets it; returns the control directory."""
    control = tmp_path / "control"
    control.mkdir()
    monkeypatch.setenv(RUN_ID_ENV, "run-1")
    monkeypatch.setenv(CONTROL_DIR_ENV, str(control))
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "checkpoints"))
    return control


def test_outside_spottrain_every_function_does_nothing(tmp_path, monkeypatch):
    for name in (RUN_ID_ENV, CONTROL_DIR_ENV, RESUME_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "ignored"))  # only meaningful with a run
    before = signal.getsignal(signal.SIGTERM)
    (tmp_path / "ckpt").mkdir()
    assert script.checkpoint_dir(tmp_path / "mine") == tmp_path / "mine"
    assert script.resume_dir() is None
    assert script.report(3, 10, loss=1.0) is None
    assert script.checkpoint_saved(tmp_path / "ckpt", 3) is None
    assert script.should_stop() is False
    assert signal.getsignal(signal.SIGTERM) is before
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt"]


def test_inside_the_directories_come_from_the_environment(inside, tmp_path, monkeypatch):
    assert script.checkpoint_dir("elsewhere") == tmp_path / "checkpoints"
    assert script.resume_dir() is None
    monkeypatch.setenv(RESUME_DIR_ENV, str(tmp_path / "checkpoints" / "step-10"))
    assert script.resume_dir() == tmp_path / "checkpoints" / "step-10"


def test_progress_and_saved_checkpoints_become_events(inside, tmp_path):
    directory = tmp_path / "checkpoints" / "step-4"
    directory.mkdir(parents=True)
    (directory / "train.pt").write_bytes(b"weights")
    single = tmp_path / "checkpoints" / "last.ckpt"
    single.write_bytes(b"v1")
    script.report(4, 10, **{"train/loss": 0.5, "note": "ignored"})
    staged = script.checkpoint_saved(directory, 4, metric=0.5)
    script.checkpoint_saved(single, 5)
    single.write_bytes(b"v2")  # rewritten in place by the next save: the staged copy keeps v1

    events, _ = read_events(inside, 0)
    assert events == [{"event": "attached", "framework": "pytorch"},
                      {"event": "progress", "step": 4, "total": 10, "metrics": {"train/loss": 0.5}},
                      {"event": "saved", "step": 4, "name": "step-4", "metric": 0.5},
                      {"event": "saved", "step": 5, "name": "last.ckpt", "metric": None}]
    assert staged == staged_path(inside, 4, "step-4")
    assert (staged / "train.pt").read_bytes() == b"weights"
    assert staged_path(inside, 5, "last.ckpt").read_bytes() == b"v1"


def test_only_rank_zero_writes(inside, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    (tmp_path / "ckpt").mkdir()
    script.report(1, 2, loss=1.0)
    assert script.checkpoint_saved(tmp_path / "ckpt", 1) is None
    assert script.should_stop() is False
    assert not (inside / EVENTS_FILE).exists()


def test_the_stop_file_is_a_stop_and_attached_is_written_once(inside):
    assert script.should_stop() is False
    (inside / STOP_FILE).touch()
    assert script.should_stop() is True
    events, _ = read_events(inside, 0)
    assert events == [{"event": "attached", "framework": "pytorch"}]


def test_sigterm_is_a_stop_and_the_previous_handler_still_runs(inside):
    seen = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    assert script.should_stop() is False  # installs the handler
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert script.should_stop() is True
    assert seen == [signal.SIGTERM]


def test_catch_sigterm_without_chain_replaces_the_handler(inside):
    seen = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    script.catch_sigterm(chain=False)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    assert script.should_stop() is True
    assert seen == []
