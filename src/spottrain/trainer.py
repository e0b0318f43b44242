"""The training loop: resume, step, log, evaluate, checkpoint, end. Read it top to bottom.

Everything a stage trains comes from its task (`spottrain.tasks`: model, data, loss, evaluation, export); when
to save and what is the checkpointer's; everything that makes a run survive preemption comes from the
checkpointer and the deterministic step sampler.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from spottrain import runtime
from spottrain.attempt import AttemptRecorder, ledger_metrics
from spottrain.batches import StepBatches
from spottrain.checkpoint.checkpointer import Checkpointer, SavePolicy, Stateful, Transfers
from spottrain.early_stopping import EarlyStopping
from spottrain.elastic import fitted_to_world
from spottrain.engine import build_engine, consolidated_state_dict
from spottrain.preemption import PreemptionNotice, failed_attempt, report_exit_code
from spottrain.run_files import RunFiles
from spottrain.sampler import StepSampler
from spottrain.startup import StartupClock
from spottrain.run_settings import settings_as_launched
from spottrain.tasks import CheckpointExtras, JudgedAfterTraining, Task, create_task
from spottrain.tracking import (NodeSystemMetrics, NullTracker, RunShape, Tracker, node_system_metrics,
                                prepare_node_system_metrics, tracker_for)
from spottrain_contract import layout
from spottrain_contract.job import (PREEMPTED_EXIT_CODE, RUN_ID_ENV, mlflow_tracking_uri, progress_path,
                                    stop_request_path, write_progress)
from spottrain_contract.ledger import FAILED, FINISHED, PREEMPTED, STOPPED
from spottrain_contract.lookup import StoredRun
from spottrain_contract.recipe import LoadedRecipe
from spottrain_contract.store import open_store, probe_store

log = logging.getLogger("spottrain")


@dataclass
class LoopPosition:
    """Where the loop is: saved in every checkpoint (the data position follows from it, see StepSampler)."""

    step: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def train(loaded: LoadedRecipe) -> int:
    """Run (or continue) the training run named by $SPOTTRAIN_RUN_ID. Returns the process exit code: 0, the
    preempted code (restart me), the do-not-restart code for a fault no restart heals (one line says which),
    or 1 for one that a restart may heal (the store out of reach)."""
    attempt = AttemptRecorder()  # this attempt's ledger entry, closed however the attempt ends
    try:
        return _train(loaded, attempt)
    except Exception as exc:
        attempt.end(FAILED)
        failure = failed_attempt(exc, loaded.recipe.train.checkpoint.local_dir)
        if failure.code is None:
            raise  # a bug or a crash: its traceback (the console shows it once), and the restart budget
        if failure.first:
            log.error("%s", failure.message)
        runtime.leave_process_group()
        report_exit_code(failure.code)
        return failure.code


def _train(loaded: LoadedRecipe, attempt: AttemptRecorder) -> int:
    started, clock = time.perf_counter(), StartupClock()
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        raise SystemExit(f"{RUN_ID_ENV} is not set: start training with `launch recipe {loaded.name}`, "
                         f"or export {RUN_ID_ENV}=<a name for this run>")
    notice = PreemptionNotice(stop_request_path(loaded.recipe.train.checkpoint.local_dir, run_id))
    ranks = runtime.init_distributed()
    logging.basicConfig(level=logging.INFO if ranks.is_main else logging.WARNING,
                        format=f"[rank {ranks.rank}] %(asctime)s %(name)s: %(message)s")
    # the ranks present may differ from the recipe's (spot capacity): the global batch is the recipe's
    cfg = fitted_to_world(loaded.recipe.train, loaded.recipe.world_size, ranks.world_size)
    store = open_store(cfg.checkpoint.uri, cfg.checkpoint.endpoint_url)
    notice.asked_in_store(store, f"{run_id}/{layout.STOP_REQUESTED}")
    done = StoredRun(store, run_id).completed()
    if done is not None:  # before anything is built: a finished run says so in seconds
        log.info("run %s already finished at step %d", run_id, done)
        report_exit_code(0)
        return 0
    probe_store(store, run_id, ranks.rank)
    changes = runtime.decided_by_rank_zero(lambda: settings_as_launched(store, run_id, loaded))
    runtime.seed_everything(cfg.seed)
    # MLflow (a server round trip, or a local database's migrations) is set up while the model is built.
    tracker_setup = ThreadPoolExecutor(1).submit(_tracker, loaded, run_id, ranks)
    if ranks.local_rank == 0:
        prepare_node_system_metrics(ranks.node)
    transfers = Transfers(store, Path(cfg.checkpoint.local_dir), run_id, ranks)
    transfers.prefetch()  # a resumed attempt's checkpoint downloads while the task, the model and the engine are built
    clock.lap("setup")

    task = create_task(loaded.recipe, ranks, RunFiles(store, run_id))
    sampler = StepSampler(task.training_indices, per_gpu=cfg.batch.per_gpu, grad_accum=cfg.batch.grad_accum,
                          world_size=ranks.world_size, rank=ranks.rank, seed=cfg.seed)
    total_steps = sampler.total_steps(cfg.epochs, cfg.max_steps)
    eval_every = cfg.eval.in_steps(sampler.steps_per_epoch)
    stopping = EarlyStopping(cfg.early_stopping, cfg.checkpoint.best_metric, cfg.checkpoint.best_mode)
    model = task.build_model()
    clock.lap("model")
    engine = build_engine(model, cfg, ranks.world_size, total_steps, load_universal=transfers.loads_universal())
    clock.lap("engine")
    checkpoints = Checkpointer(transfers, keep=cfg.checkpoint.keep, seed=cfg.seed,
                               policy=SavePolicy(cfg.checkpoint.in_steps(sampler.steps_per_epoch),
                                                 cfg.checkpoint.best_metric, cfg.checkpoint.best_mode),
                               extra_tensors=_extra_tensors(cfg, ranks, engine, task))
    position = LoopPosition()
    tracker = tracker_setup.result()
    node_metrics = _node_system_metrics(loaded, ranks, tracker)
    for key, value in task.run_tags.items():  # e.g. LoRA's parameter count
        tracker.tag(key, value)
    clock.lap("tracking")
    checkpoints.register(loop=position, **({"early_stopping": stopping} if cfg.early_stopping else {}),
                         **({"task": task} if isinstance(task, Stateful) else {}), tracker=tracker)
    if checkpoints.resume(engine):  # from the final checkpoint too: then only what follows it is left to do
        log.info("resumed run %s at step %d from %s", run_id, position.step, checkpoints.store.uri)
    clock.lap("restore")
    if ranks.is_main:
        attempt.start(store, run_id, started=time.time() - (time.perf_counter() - started), start_step=position.step,
                      world_size=ranks.world_size, device=runtime.device_name(),
                      gpus=ranks.world_size if runtime.device().type == "cuda" else 0)
    if changes and ranks.is_main:
        log.warning("settings changed at step %d: %s", position.step, "; ".join(changes))
        tracker.tag(f"spottrain.change.step-{position.step:08d}", "; ".join(changes))

    progress = _Progress(progress_path(cfg.checkpoint.local_dir, run_id), position.step, total_steps, ranks)
    batches = StepBatches(task, sampler, runtime.device(), total_steps, ahead=cfg.performance.prefetch_steps)
    ending = FINISHED
    while position.step < total_steps and not stopping.stopped:
        step_started, lr = time.perf_counter(), engine.get_lr()[0]
        metrics = _train_step(engine, task, batches.of_step(position.step))
        position.step += 1
        step, at_end = position.step, position.step == total_steps
        progress.advance(step)
        if progress.first_step_of_attempt(step):
            clock.lap("first_step")
            checkpoints.prepare_snapshots(engine)
            log.info("start-up: %s", clock.summary())
            attempt.beat(step, startup_seconds=time.perf_counter() - started)
            tracker.log({**clock.metrics(), "perf/start_to_first_step_seconds": time.perf_counter() - started}, step)
        step_seconds = time.perf_counter() - step_started
        evaluated = _evaluate(engine, task) if step % eval_every == 0 or at_end else {}
        final = at_end or stopping.update(evaluated)  # every rank: the metrics are averaged across ranks
        if step % cfg.log_every_steps == 0 or final:
            logged = {**runtime.mean_across_ranks(metrics), task.learning_rate_metric: lr,
                      "train/epoch": sampler.epoch_of(step)}
            tracker.log({**logged, "perf/step_seconds": step_seconds, **checkpoints.transfers.metrics()}, step)
            progress.show(logged)
            attempt.beat(step)
        tracker.log(evaluated, step)
        if stopping.stopped and ranks.is_main:
            log.info("stopped early at step %d (epoch %.4g of %s): %s best %.6g, not bettered in %d evaluations",
                     step, sampler.epoch_of(step), cfg.epochs, stopping.metric, stopping.best, stopping.stale)
        ended = checkpoints.end_step(engine, step, metrics=evaluated, final=final, preempted=notice.received)
        tracker.log(ended.to_log, step)
        if ended.preempted:
            log.warning("preemption notice: checkpointed step %d, waiting for the upload", step)
            ending = STOPPED if notice.stopped else PREEMPTED  # a person's stop is no preemption
            break
    progress.close()
    batches.close()
    return _end_attempt(ending, position.step, engine, task, checkpoints, tracker, node_metrics, ranks, attempt)


def _train_step(engine, task: Task, micro_batches: list) -> dict[str, torch.Tensor]:
    """One optimizer step: DeepSpeed accumulates over the micro-batches (on the device) and steps at the
    boundary."""
    totals: dict[str, torch.Tensor] = {}
    for batch in micro_batches:
        loss, metrics = task.loss(engine, batch)
        engine.backward(loss)
        engine.step()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value.float() / len(micro_batches)
    return totals


def _evaluate(engine, task: Task) -> dict[str, float]:
    engine.eval()
    try:
        with torch.no_grad():
            return task.evaluate(engine)
    finally:
        engine.train()


def _extra_tensors(cfg, ranks, engine, task: Task):
    """What a task keeps beside every checkpoint (the critic's value head), gathered at each save."""
    extras = task.checkpoint_modules(engine.module) if isinstance(task, CheckpointExtras) else {}
    return lambda: {name: consolidated_state_dict(module, cfg.deepspeed.zero_stage, ranks.is_main)
                    for name, module in extras.items()}


def _end_attempt(ending: str, step: int, engine, task: Task, checkpoints: Checkpointer, tracker: Tracker | NullTracker,
                 node_metrics: Optional[NodeSystemMetrics], ranks, attempt: AttemptRecorder) -> int:
    """How an attempt ends that does not fail, `ending` FINISHED, PREEMPTED or STOPPED: its checkpoints durable,
    the system metrics of its nodes sent, its ledger entry closed (the ledger's totals logged) and its MLflow run
    closed, left RUNNING when preempted or stopped for the next attempt to continue; returns the exit code, said to
    the supervisor too. A finished run publishes its final export first, verified once every rank is done, and is
    marked complete last. Idempotent: an attempt resumed from the final checkpoint runs it again whole."""
    finished = ending == FINISHED
    checkpoints.wait()
    if finished:
        _publish_final_export(engine, task, checkpoints, tracker, ranks, step)
    if node_metrics:  # before rank 0 ends the MLflow run
        node_metrics.finish()
    if finished:
        runtime.barrier()
        if ranks.is_main:
            checkpoints.verify(step)
    ledger = attempt.end(ending, step)  # rank 0's entry; None on the other ranks
    tracker.log(ledger_metrics(ledger), step)
    tracker.close(status="FINISHED" if finished else None)
    if finished and ranks.is_main:
        checkpoints.mark_complete(step)
        where = f"{checkpoints.store.uri}/{checkpoints.run_id}"
        print(f"run {checkpoints.run_id} finished at step {step}: checkpoints in {where}, final weights in "
              f"{where}/{layout.FINAL_EXPORT}", file=sys.stderr)
    checkpoints.close()
    code = 0 if finished else PREEMPTED_EXIT_CODE
    report_exit_code(code)  # a signal that reaches torchrun after this point must not turn this code into failure
    return code


def _publish_final_export(engine, task: Task, checkpoints: Checkpointer, tracker: Tracker | NullTracker, ranks,
                          step: int) -> None:
    """The final weights exported (every rank) and, for a task judged after training, judged; rank 0 publishes
    the export beside the checkpoints and logs the judgement with the files that explain it."""
    out_dir = checkpoints.local_dir / layout.FINAL_EXPORT
    task.export(engine.module, out_dir)
    judged = task.after_training(engine.module, out_dir) if isinstance(task, JudgedAfterTraining) else {}
    if ranks.is_main:
        checkpoints.publish_directory(out_dir, layout.FINAL_EXPORT)
        if judged:
            tracker.log(judged, step)
            tracker.log_artifacts([out_dir / name for name in task.mlflow_artifacts])


def _node_system_metrics(loaded: LoadedRecipe, ranks, tracker: Tracker | NullTracker) -> Optional[NodeSystemMetrics]:
    """Every node's system metrics in the run's one MLflow run: rank 0's tracker logs its node's, the local rank 0
    of each other node its own, into the MLflow run whose id rank 0 shares here (a collective: every rank calls
    this). None on the ranks that log none."""
    mlflow_run_id = runtime.decided_by_rank_zero(lambda: tracker.mlflow_run_id)
    if ranks.local_rank != 0:
        return None
    recipe = loaded.recipe
    return node_system_metrics(mlflow_tracking_uri(recipe.mlflow.tracking_uri, recipe.train.checkpoint.local_dir),
                               mlflow_run_id, ranks.node)


def _tracker(loaded: LoadedRecipe, run_id: str, ranks) -> Tracker | NullTracker:
    """MLflow from rank 0 (a NullTracker on the other ranks), tagged with how this attempt really runs."""
    if not ranks.is_main:
        return NullTracker()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size))
    on_gpus = runtime.device().type == "cuda"
    return tracker_for(loaded, run_id, RunShape(ranks=ranks.world_size, per_node=per_node,
                                                device=runtime.device_name(), gpus_per_node=per_node if on_gpus else 0))


class _Progress:
    """Where the run is, for people (a tqdm bar on rank 0) and for `launch status` and the supervisor's count of
    recomputed steps (the progress file: step, total, and the step this attempt started from)."""

    def __init__(self, path: Path, start: int, total: int, ranks):
        from tqdm import tqdm

        self.path, self.start, self.total, self.is_main = path, start, total, ranks.is_main
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not ranks.is_main,
                        mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
        self._write(start)

    def first_step_of_attempt(self, step: int) -> bool:
        return step == self.start + 1

    def advance(self, step: int) -> None:
        self.bar.update(1)
        self._write(step)

    def show(self, logged: dict[str, float]) -> None:
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in logged.items() if k.endswith("loss")})

    def close(self) -> None:
        self.bar.close()

    def _write(self, step: int) -> None:
        if self.is_main:
            write_progress(self.path, step, self.total, self.start)
