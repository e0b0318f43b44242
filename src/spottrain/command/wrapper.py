"""One attempt of a command recipe's script on a node: `python -m spottrain command -- torchrun … train.py --config
{config}` (the run script renders it; read it top to bottom).

Before the script: the run's settings checked against those it was launched with, the store probed (a store that
refuses writes stops the run here, exit 78), the config file written, the checkpoint directory emptied and the
newest complete checkpoint restored into it, the run's one MLflow run found or made. While it runs: its events
(`spottrain_contract.script`) become MLflow metrics (each step once, across attempts), progress for `launch
status` and the hub, ledger beats, and uploads of each checkpoint it completes; a notice (SIGTERM: a preemption or
a person's stop) becomes the stop file for a script with an integration, a SIGTERM for one without. After: the
attempt's ledger entry, the final mark of a finished run, and the exit code of the job contract.

Node 0 keeps the run (store, ledger, MLflow); another node's wrapper restores the checkpoint and runs its part of
the script. A multi-node script saves its checkpoints on node 0 (rank 0 stages them).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from spottrain.attempt import AttemptRecorder, ledger_metrics
from spottrain.command.child import ScriptProcess, script_environment
from spottrain.command.sync import ScriptCheckpoints
from spottrain.command.unannounced import UnannouncedCheckpoints
from spottrain.preemption import PreemptionNotice, failed_attempt, record_failure, report_exit_code
from spottrain.run_settings import settings_as_launched
from spottrain.tracking import RunShape, Tracker, tracker_for
from spottrain_contract import layout, script
from spottrain_contract.command import CONFIG_PLACEHOLDER, CommandRecipe, config_text
from spottrain_contract.job import (DO_NOT_RESTART_EXIT_CODE, PREEMPTED_EXIT_CODE, RUN_ID_ENV, progress_path,
                                    run_dir, stop_request_path, write_progress)
from spottrain_contract.ledger import FAILED, FINISHED, PREEMPTED, STOPPED
from spottrain_contract.lookup import StoredRun
from spottrain_contract.recipe import LoadedRecipe
from spottrain_contract.store import is_permanent, open_store, probe_store, store_failure

log = logging.getLogger("spottrain.command")
POLL_SECONDS = 0.2
SCAN_EVERY_POLLS = 10  # a script without an integration: its checkpoint directory looked at every 2 s
NODE_RANK_ENV = "SKYPILOT_NODE_RANK"  # the run script's torchrun takes --node_rank from it; unset: one node
CHECKPOINTS, CONTROL, EXPORT = "checkpoints", "control", "export"  # under the run's local directory
_STOPPED_CODES = (0, PREEMPTED_EXIT_CODE)  # how a script asked to stop may end and still be stopped (or of the SIGTERM)


def run_command(loaded: LoadedRecipe, argv: list[str]) -> int:
    """One attempt; returns the job's exit code (0, 75 resume me, 78 do not restart, 1 restart within budget)."""
    logging.basicConfig(level=logging.INFO, format="[spottrain] %(asctime)s %(message)s")
    recipe = loaded.recipe
    if not isinstance(recipe, CommandRecipe):
        raise SystemExit(f"recipe {loaded.name} is not a command recipe (task: {recipe.task})")
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        raise SystemExit(f"{RUN_ID_ENV} is not set: start it with `launch recipe {loaded.name}`")
    attempt = AttemptRecorder()
    try:
        return _Attempt(loaded, run_id, attempt).run(argv)
    except Exception as exc:
        attempt.end(FAILED)
        failure = failed_attempt(exc, recipe.train.checkpoint.local_dir)
        if failure.code is None:
            raise
        log.error("%s", failure.message)
        report_exit_code(failure.code)
        return failure.code


class _Attempt:
    def __init__(self, loaded: LoadedRecipe, run_id: str, attempt: AttemptRecorder):
        self.loaded, self.recipe, self.run_id, self.attempt = loaded, loaded.recipe, run_id, attempt
        checkpoint = self.recipe.train.checkpoint
        self.local = run_dir(checkpoint.local_dir, run_id)
        self.node = int(os.environ.get(NODE_RANK_ENV) or 0)
        self.notice = PreemptionNotice(stop_request_path(checkpoint.local_dir, run_id))
        self.store = open_store(checkpoint.uri, checkpoint.endpoint_url)
        self.checkpoints = ScriptCheckpoints(self.store, run_id, Path(checkpoint.local_dir), keep=checkpoint.keep,
                                             best_mode=checkpoint.best_mode)
        self.uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload")
        self.pending: list[Future] = []
        self.tracker: Optional[Tracker] = None
        self.attached, self.start_step, self.step, self.total, self.ranks = False, 0, 0, None, 1
        self.started, self.started_training = time.time(), False
        self.unsent: list = []  # metrics the checkpoint resumed from kept for MLflow

    @property
    def keeps_the_run(self) -> bool:
        return self.node == 0

    def run(self, argv: list[str]) -> int:
        self.notice.asked_in_store(self.store, f"{self.run_id}/{layout.STOP_REQUESTED}")
        done = StoredRun(self.store, self.run_id).completed()
        if done is not None:
            log.info("run %s already finished at step %d", self.run_id, done)
            report_exit_code(0)
            return 0
        if self.keeps_the_run:
            probe_store(self.store, self.run_id, 0)
            settings_as_launched(self.store, self.run_id, self.loaded)
        environment = self._prepare()
        shape = _shape(argv, self.recipe)
        self.ranks = shape.ranks
        if self.keeps_the_run:
            self.tracker = tracker_for(self.loaded, self.run_id, shape)
            self.tracker.requeue(self.unsent)
            environment.update(_mlflow_environment(self.tracker, self.recipe))
            self.attempt.start(self.store, self.run_id, started=self.started, start_step=self.start_step,
                               world_size=shape.ranks, device=shape.device,
                               gpus=shape.gpus_per_node * self.recipe.resources.nodes)
        config_file = environment[script.CONFIG_ENV]
        child = ScriptProcess([arg.replace(CONFIG_PLACEHOLDER, config_file) for arg in argv],
                              script_environment(dict(os.environ), environment))
        code = self._watch(child)
        return self._end(child, code)

    def _prepare(self) -> dict[str, str]:
        """The config file, an empty checkpoint directory with the newest checkpoint restored into it, an empty
        control directory: the node contract's environment for the script."""
        checkpoint_dir, control_dir = self.local / CHECKPOINTS, self.local / CONTROL
        self.export_dir = self.local / EXPORT
        for directory in (checkpoint_dir, control_dir, self.export_dir):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        config_file = self.local / self.recipe.config_file
        config_file.write_text(config_text(self.recipe), encoding="utf-8")
        environment = {script.CONFIG_ENV: str(config_file.resolve()),
                       script.CHECKPOINT_DIR_ENV: str(checkpoint_dir.resolve()),
                       script.CONTROL_DIR_ENV: str(control_dir.resolve()),
                       script.EXPORT_DIR_ENV: str(self.export_dir.resolve())}
        restored = self.checkpoints.restore_into(checkpoint_dir)
        if restored is not None:
            self.start_step, resume_path, self.unsent = restored
            self.step = self.start_step
            environment[script.RESUME_DIR_ENV] = str(resume_path.resolve())
            log.info("resuming run %s from step %d (%s)", self.run_id, self.start_step, resume_path.name)
        self.control_dir = control_dir
        self.unannounced = UnannouncedCheckpoints(checkpoint_dir, self.start_step)
        return environment

    def _watch(self, child: ScriptProcess) -> int:
        """Until the script exits: its events acted on, a notice passed on once, and for a script without an
        integration, its checkpoints found in its directory."""
        offset, told, polls = 0, False, 0
        while True:
            code = child.poll()
            events, offset = script.read_events(self.control_dir, offset)
            for event in events:
                self._on_event(event)
            if code is not None:
                return child.wait()
            if self.notice.received and not told:
                told = True
                self._pass_notice(child)
            polls += 1
            if not self.attached and polls % SCAN_EVERY_POLLS == 0:
                self._take_unannounced(script_ended=False)
            time.sleep(POLL_SECONDS)

    def _take_unannounced(self, script_ended: bool) -> None:
        """A checkpoint of a script without an integration, once complete: staged and uploaded as an announced
        one is; its step is the attempt's progress where the script reports none."""
        found = self.unannounced.newly_complete(script_ended) if self.keeps_the_run else None
        if found is None:
            return
        step, path = found
        script.stage(self.control_dir, path, step)
        self._publish(step, path.name, metric=None)
        if step > self.step:
            self._progressed(step, metrics={})

    def _progressed(self, step: int, metrics: dict[str, float]) -> None:
        """The script is at `step`: the progress file, the ledger's beat and its metrics (each step once in the
        MLflow run, across attempts)."""
        self.step = step
        write_progress(progress_path(self.recipe.train.checkpoint.local_dir, self.run_id), step,
                       self.total or step, self.start_step)
        self.tracker.log(metrics, step)
        self.attempt.beat(step)

    def _publish(self, step: int, name: str, metric: Optional[float]) -> None:
        """Upload a staged checkpoint on the upload thread, with the metrics MLflow has not confirmed of its steps
        (reported before it was saved)."""
        staged = script.staged_path(self.control_dir, step, name)
        unsent = [m for m in self.tracker.pending() if m[3] <= step]
        self.pending.append(self.uploads.submit(self.checkpoints.publish, staged, step, metric, self.ranks, unsent))

    def _pass_notice(self, child: ScriptProcess) -> None:
        if self.attached:
            log.warning("notice: asking the script to save and stop")
            (self.control_dir / script.STOP_FILE).touch()
        else:
            log.warning("notice: SIGTERM to the script (it has no spottrain integration)")
            child.terminate()

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == script.ATTACHED:
            self.attached = True
            if self.notice.received:  # a notice that came before the script could hear it
                (self.control_dir / script.STOP_FILE).touch()
        elif kind == script.PROGRESS:
            self.total = event.get("total") or self.total
            if self.keeps_the_run:
                metrics = {k: float(v) for k, v in (event.get("metrics") or {}).items() if _is_number(v)}
                if not self.started_training:  # the attempt's first step: how long the start took
                    self.started_training = True
                    startup = time.time() - self.started
                    metrics["perf/start_to_first_step_seconds"] = startup
                    self.attempt.beat(int(event["step"]), startup_seconds=startup)
                self._progressed(int(event["step"]), metrics)
        elif kind == script.SAVED and self.keeps_the_run:
            self._publish(int(event["step"]), event["name"], event.get("metric"))

    def _uploads_done(self) -> Optional[BaseException]:
        """Wait for every upload; the first that failed after its retries, if any."""
        self.uploads.shutdown(wait=True)
        for future in self.pending:
            if future.exception() is not None:
                return future.exception()
        return None

    def _end(self, child: ScriptProcess, code: int) -> int:
        code = child.asked_code(code)
        if code == 0 and not self.attached and not self.notice.received:
            self._take_unannounced(script_ended=True)  # its newest checkpoint is complete now
        failed_upload = self._uploads_done() if self.keeps_the_run else None
        if failed_upload is not None:
            what = f"checkpoint upload to {self.store.uri} failed: {store_failure(failed_upload)}"
            permanent = is_permanent(failed_upload)
            return self._fail(f"train.checkpoint.uri: {what}" if permanent else what, None,
                              DO_NOT_RESTART_EXIT_CODE if permanent else 1)
        if self.notice.received and (code in _STOPPED_CODES or child.ended_by_sigterm(code)):
            ending = STOPPED if self.notice.stopped else PREEMPTED
            return self._close(ending, PREEMPTED_EXIT_CODE)
        if code == 0:
            if self.keeps_the_run:
                self.checkpoints.finish(self.step, self.export_dir)
            return self._close(FINISHED, 0)
        if code == PREEMPTED_EXIT_CODE:
            return self._close(PREEMPTED, PREEMPTED_EXIT_CODE)
        rank, line = child.failure(code)
        return self._fail(line, rank, DO_NOT_RESTART_EXIT_CODE if code == DO_NOT_RESTART_EXIT_CODE else 1)

    def _fail(self, message: str, rank: Optional[int], code: int) -> int:
        record_failure(self.recipe.train.checkpoint.local_dir, message, rank=rank)  # the first line written stays
        log.error("script failed: %s", message)
        return self._close(FAILED, code)

    def _close(self, ending: str, code: int) -> int:
        """The attempt's ledger entry and MLflow run closed (left RUNNING for the next attempt unless the run
        ended), the code said to the supervisor."""
        if self.tracker is not None:
            ledger = self.attempt.end(ending, self.step)
            self.tracker.log({**ledger_metrics(ledger), **self.checkpoints.metrics()}, self.step)
            self.tracker.close(status={FINISHED: "FINISHED", FAILED: "FAILED"}.get(ending))
        if ending == FINISHED:
            print(f"run {self.run_id} finished at step {self.step}: checkpoints in "
                  f"{self.store.uri}/{self.run_id}", file=sys.stderr)
        report_exit_code(code)
        return code


def _shape(argv: list[str], recipe: CommandRecipe) -> RunShape:
    """How this attempt runs: ranks per node from torchrun's --nproc_per_node where it is a number (a platform's
    script reads it from the GPUs present), else the recipe's GPUs; the device from torch, which the node has."""
    per_node = recipe.resources.preferred_gpus
    for arg in argv:
        if arg.startswith("--nproc_per_node=") and arg.split("=", 1)[1].isdigit():
            per_node = int(arg.split("=", 1)[1])
    if recipe.launcher == "python":
        per_node = 1
    import torch

    on_gpus = torch.cuda.is_available()
    return RunShape(ranks=per_node * recipe.resources.nodes, per_node=per_node,
                    device=torch.cuda.get_device_name(0) if on_gpus else "cpu",
                    gpus_per_node=per_node if on_gpus else 0)


def _mlflow_environment(tracker: Tracker, recipe: CommandRecipe) -> dict[str, str]:
    """The run's one MLflow run for the script's own logging (found or made before the script starts; a server
    out of reach at start leaves the run id unset, and the script's own logging makes a run of its own)."""
    environment = {"MLFLOW_TRACKING_URI": tracker.uri, "MLFLOW_EXPERIMENT_NAME": recipe.mlflow.experiment}
    if tracker.mlflow_run_id:
        environment["MLFLOW_RUN_ID"] = tracker.mlflow_run_id
    return environment


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
