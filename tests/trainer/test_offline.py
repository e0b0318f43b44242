"""Which checkpoint `launch eval` and `launch predict` read, and their one-line refusals."""

from __future__ import annotations

import json

import pytest

from spottrain.offline import RestoredRun, resolve_step
from spottrain_contract import layout
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.layout import Manifest
from spottrain_contract.lookup import StoredRun
from spottrain_contract.recipe import load_recipe
from spottrain_contract.store import open_store
from tests.trainer.harness import PROJECT


def stored_run(tmp_path, steps, best=None) -> StoredRun:
    store = open_store(str(tmp_path / "store"))
    for step in steps:
        store.put_bytes(Manifest(step=step, world_size=2, final=False).to_json(),
                        layout.step_prefix("r", step) + layout.MANIFEST)
    store.put_bytes(b"{}", layout.step_prefix("r", 99) + "partial.pt")  # a checkpoint never completed
    if best is not None:
        store.put_bytes(json.dumps({"step": best}).encode(), f"r/{layout.BEST_POINTER}")
    return StoredRun(store, "r")


def test_best_last_or_a_complete_step(tmp_path):
    run = stored_run(tmp_path, [8, 16, 24], best=16)
    assert [resolve_step(run, c) for c in ("best", "last", "8")] == [16, 24, 8]


@pytest.mark.parametrize(("steps", "best", "checkpoint", "expected"), [
    ([], None, "best", "run r has no complete checkpoint in "),
    ([8], None, "best", "--checkpoint best: run r has no best checkpoint yet (no evaluation): pass --checkpoint last"),
    ([8, 16], 8, "99", "--checkpoint: expected best, last or a complete step of run r (8, 16), got '99'"),
    ([8], 8, "newest", "--checkpoint: expected best, last or a complete step of run r (8), got 'newest'"),
])
def test_a_checkpoint_that_is_not_there_is_one_line(tmp_path, steps, best, checkpoint, expected):
    with pytest.raises(ConfigurationError) as caught:
        resolve_step(stored_run(tmp_path, steps, best), checkpoint)
    assert str(caught.value).startswith(expected)


def test_a_task_without_a_test_evaluation_says_so(tmp_path):
    stored_run(tmp_path, [4], best=4)
    loaded = load_recipe("baseline", project_dir=PROJECT, profile="local",
                         overrides=[f"train.checkpoint.uri={tmp_path / 'store'}"])
    with pytest.raises(ConfigurationError, match="task baseline: no test evaluation or prediction"):
        RestoredRun(loaded, "r", "best")


def test_a_failing_evaluation_or_prediction_leaves_its_one_line_failure_for_the_supervisor(tmp_path, monkeypatch):
    """The supervisor says why a job failed from the failure file (`launch status`, the hub): an eval or predict
    job writes it as the trainer does, its refusal or its crash, not `exit code 78, no error reported`."""
    from spottrain import offline
    from spottrain.__main__ import main
    from spottrain_contract.job import EXIT_FILE_ENV, RUN_ID_ENV, failure_path

    stored_run(tmp_path, [4], best=4)
    monkeypatch.chdir(PROJECT)
    monkeypatch.setenv(RUN_ID_ENV, "job")
    monkeypatch.setenv(EXIT_FILE_ENV, str(tmp_path / "exit-code"))
    monkeypatch.setenv("RANK", "0")
    failure = failure_path(tmp_path / "local", "job")
    settings = ["--recipe", "baseline", "--profile", "local", "--override", f"train.checkpoint.uri={tmp_path / 'store'}",
                "--override", f"train.checkpoint.local_dir={tmp_path / 'local'}"]
    for command in (["eval", "--run-id", "r"], ["predict", "an input", "--run-id", "r"]):
        failure.unlink(missing_ok=True)  # as the supervisor does before each attempt
        assert main([*command, *settings]) == 78
        assert failure.read_text() == ("[rank 0] task baseline: no test evaluation or prediction (it is not "
                                       "Evaluable: inference_model, checkpoint_modules, test_metrics)\n")
        assert (tmp_path / "exit-code").read_text() == "78"

    def crash(*args):
        raise RuntimeError("out of memory\nand more")

    monkeypatch.setattr(offline, "evaluate", crash)
    failure.unlink()
    with pytest.raises(RuntimeError):  # a crash keeps its traceback
        main(["eval", "--run-id", "r", *settings])
    assert failure.read_text() == "[rank 0] RuntimeError: out of memory\n"
