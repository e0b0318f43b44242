"""Each example under torchrun (2 CPU ranks, the recipe's local config) with the node contract's environment but
without the wrapper: one uninterrupted run; one stopped by the stop file mid-run; one resumed from the checkpoint
the stopped run staged. The stopped run saves and exits 0, the resumed one reports only the steps left, and its
final weights equal the uninterrupted run's bit for bit (every example resumes exactly)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from spottrain_contract.recipe import flatten, load_recipe
from spottrain_contract.script import ATTACHED, SAVED
from tests.integrations.harness import Attempt, local_config, run_example

STOP_AT = 12  # the stop file appears once step 12 is reported; saves are at 10, 20, 30


@dataclass(frozen=True)
class Example:
    script: str
    recipe: str
    framework: str
    final_weights: str  # under the export directory
    steps: Callable[[dict], int]
    complete: Callable[[Path, int], bool]  # a staged checkpoint holds everything a resume needs, of that step
    has_metric: bool


def _ddp_complete(staged: Path, step: int) -> bool:
    return (torch.load(staged / "train.pt")["step"] == step
            and {p.name for p in staged.iterdir()} == {"train.pt", "rng-0.pt", "rng-1.pt"})


def _hf_complete(staged: Path, step: int) -> bool:
    names = {p.name for p in staged.iterdir()}
    state = json.loads((staged / "trainer_state.json").read_text())
    return state["global_step"] == step and {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state_0.pth",
                                             "rng_state_1.pth"} <= names


def _lightning_complete(staged: Path, step: int) -> bool:
    return staged.is_file() and torch.load(staged, weights_only=False)["global_step"] == step


EXAMPLES = {
    "ddp": Example("examples/ddp/train.py", "ddp_example", "pytorch", "final.pt",
                   lambda config: config["train"]["steps"], _ddp_complete, has_metric=False),
    "hf_trainer": Example("examples/hf_trainer/train.py", "hf_trainer", "transformers", "model.safetensors",
                          lambda config: config["training"]["max_steps"], _hf_complete, has_metric=True),
    "lightning": Example("examples/lightning/train.py", "lightning_example", "lightning", "final.pt",
                         lambda config: config["train"]["steps"], _lightning_complete, has_metric=True),
}


@dataclass
class Runs:
    param: str
    example: Example
    total: int
    reference: Attempt
    stopped: Attempt
    resumed: Optional[Attempt]


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def runs(request, tmp_path_factory) -> Runs:
    """The three attempts of one example, shared by every test of it."""
    example = EXAMPLES[request.param]
    config = local_config(example.recipe)
    root = tmp_path_factory.mktemp(request.param)
    reference = run_example(example.script, config, root / "reference")
    stopped = run_example(example.script, config, root / "stopped", stop_at=STOP_AT)
    saved = stopped.of(SAVED)
    resumed = (run_example(example.script, config, root / "resumed", resume_from=stopped.last_staged())
               if stopped.returncode == 0 and saved else None)
    return Runs(request.param, example, example.steps(config), reference, stopped, resumed)


def weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path)


@pytest.mark.slow
def test_an_uninterrupted_run_reports_every_step_and_stages_complete_checkpoints(runs):
    reference, total = runs.reference, runs.total
    assert reference.returncode == 0, reference.output[-3000:]
    assert reference.events[0] == {"event": ATTACHED, "framework": runs.example.framework}
    assert set(reference.progress_steps()) == set(range(1, total + 1))
    saved = reference.of(SAVED)
    assert [event["step"] for event in saved] == [10, 20, 30]
    assert all(runs.example.complete(reference.staged(event), event["step"]) for event in saved)
    assert all((event["metric"] is not None) == runs.example.has_metric for event in saved)
    assert (reference.export_dir / runs.example.final_weights).is_file()


@pytest.mark.slow
def test_a_stop_request_saves_the_step_reached_and_exits_zero(runs):
    stopped = runs.stopped
    assert stopped.returncode == 0, stopped.output[-3000:]
    last = stopped.of(SAVED)[-1]
    assert STOP_AT <= last["step"] < runs.total, "the run ended before the stop file was seen"
    assert max(stopped.progress_steps()) == last["step"]
    assert runs.example.complete(stopped.staged(last), last["step"])
    assert not (stopped.export_dir / runs.example.final_weights).exists()


@pytest.mark.slow
def test_the_resumed_run_reports_only_the_steps_left(runs):
    assert runs.resumed is not None and runs.resumed.returncode == 0, (runs.resumed or runs.stopped).output[-3000:]
    first, second = set(runs.stopped.progress_steps()), set(runs.resumed.progress_steps())
    assert first & second == set()
    assert first | second == set(range(1, runs.total + 1))
    assert [event["step"] for event in runs.resumed.of(SAVED)][-1] == runs.total


@pytest.mark.slow
def test_the_resumed_run_ends_with_the_uninterrupted_weights_bit_for_bit(runs):
    assert runs.resumed is not None and runs.resumed.returncode == 0
    expected = weights(runs.reference.export_dir / runs.example.final_weights)
    got = weights(runs.resumed.export_dir / runs.example.final_weights)
    assert expected.keys() == got.keys()
    differing = {name: (expected[name] - got[name]).abs().max().item() for name in expected
                 if not torch.equal(expected[name], got[name])}
    assert differing == {}


@pytest.mark.slow
def test_lightning_answers_a_sigterm_with_a_checkpoint_and_exit_zero(tmp_path):
    """Lightning's own SIGTERM handling would end fit() with SIGTERMException before any save; the callback's
    handler makes a SIGTERM one more stop request."""
    example = EXAMPLES["lightning"]
    config = local_config(example.recipe)
    stopped = run_example(example.script, config, tmp_path, stop_at=STOP_AT, sigterm=True)
    assert stopped.returncode == 0, stopped.output[-3000:]
    last = stopped.of(SAVED)[-1]
    assert STOP_AT <= last["step"] < example.steps(config)
    assert example.complete(stopped.staged(last), last["step"])
    assert "SIGTERMException" not in stopped.output
    assert not (stopped.export_dir / example.final_weights).exists()


# --- the same example launched as a user launches it: the node wrapper around it, chaos on the way ------------------

CHAOS = "kills=2,signals=KILL+TERM,every=0.5:2.5,seed=1"  # a SIGKILL, then a SIGTERM notice, each mid-training
# The examples' local configs train their 30 steps in a few seconds at most (DDP and Lightning in about one):
# launched, they train longer, so that both kills land while they train on a fast machine too (their reference
# then runs the same config bare).
LONGER = {"ddp": {"train": {"steps": 1500, "save_every": 100}},
          "hf_trainer": {"data": {"train_samples": 1536}, "training": {"max_steps": 90}},
          "lightning": {"train": {"steps": 600, "save_every": 50}}}


@dataclass
class Launched:
    project: Path
    run_id: str
    done: subprocess.CompletedProcess
    reference: Attempt  # the uninterrupted bare run of the same config


@pytest.fixture(scope="module")
def launched(runs, tmp_path_factory) -> Launched:
    """`launch recipe <example> --target local --chaos …` in a project holding the recipes and examples."""
    import shutil

    from tests.integrations.harness import PROJECT
    from tests.trainer.harness import launch

    project = tmp_path_factory.mktemp("launched")
    for directory in ("recipes", "examples"):
        shutil.copytree(PROJECT / directory, project / directory)
    run_id = f"{runs.example.recipe}-chaos"
    longer = LONGER.get(runs.param, {})
    overrides = [f"--override=config.{key}={value}" for key, value in flatten(longer).items()]
    done = launch(project, "recipe", runs.example.recipe, "--target", "local", "--run-id", run_id, "--chaos", CHAOS,
                  *overrides, timeout=900)
    reference = runs.reference
    if longer:
        config = load_recipe(runs.example.recipe, project_dir=project, profile="local",
                             overrides=[o.removeprefix("--override=") for o in overrides]).recipe.config
        reference = run_example(runs.example.script, config, tmp_path_factory.mktemp("longer-reference"))
    return Launched(project, run_id, done, reference)


@pytest.mark.slow
def test_launched_with_chaos_it_finishes_with_the_uninterrupted_weights(runs, launched):
    assert launched.done.returncode == 0, launched.done.stdout[-3000:] + launched.done.stderr[-3000:]
    assert "2 chaos kills" in launched.done.stdout
    expected = weights(launched.reference.export_dir / runs.example.final_weights)
    got = weights(launched.project / "runs" / "store" / launched.run_id / "final-hf" / runs.example.final_weights)
    assert {name for name in expected if not torch.equal(expected[name], got[name])} == set()


@pytest.mark.slow
def test_launched_with_chaos_its_ledger_adds_up_and_a_notice_costs_no_step(runs, launched):
    from spottrain_contract.ledger import PREEMPTED, read_ledger
    from spottrain_contract.lookup import StoredRun
    from spottrain_contract.store import open_store

    store = open_store(str(launched.project / "runs" / "store"))
    ledger = read_ledger(store, launched.run_id)
    total = launched.reference.progress_steps()[-1]
    assert ledger.useful == total and ledger.computed == ledger.useful + ledger.recomputed
    assert len(ledger.attempts) == 3
    assert [view.recomputed for view in ledger.attempts if view.cause == PREEMPTED] == [0]
    stored = StoredRun(store, launched.run_id)
    assert stored.newest().final and stored.completed() == total


@pytest.mark.slow
def test_resumed_from_its_final_checkpoint_an_example_trains_no_step_more(runs, tmp_path):
    """An attempt killed after its last save leaves the final checkpoint; the next one must end with the same
    weights (Trainer resumed at max_steps would train a step past it: the HF example skips train())."""
    final = runs.reference.of(SAVED)[-1]
    again = run_example(runs.example.script, local_config(runs.example.recipe), tmp_path,
                        resume_from=runs.reference.staged(final))
    assert again.returncode == 0, again.output[-3000:]
    assert [step for step in again.progress_steps() if step > runs.total] == []
    expected = weights(runs.reference.export_dir / runs.example.final_weights)
    got = weights(again.export_dir / runs.example.final_weights)
    assert {name for name in expected if not torch.equal(expected[name], got[name])} == set()
