"""The training loop: resume, step, log, evaluate, checkpoint. Read it top to bottom.

Everything stage-specific comes from the pipeline (which samples, which loss, which metrics); everything that
makes a run survive preemption comes from the checkpointer and the deterministic step sampler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from launcher.job_contract import (GIT_COMMIT_ENV, PREEMPTED_EXIT_CODE, PROGRESS_FILE, RUN_ID_ENV,
                                  mlflow_tracking_uri)
from launcher.recipes import LoadedRecipe
from spottrain import runtime
from spottrain.checkpoint import layout
from spottrain.checkpoint.checkpointer import Checkpointer
from spottrain.checkpoint.store import open_store
from spottrain.data import GENERATED, EncodedDataset, load_records
from spottrain.engine import build_engine, consolidated_state_dict
from spottrain.model import build_mtp_model, export_pretrained, load_tokenizer
from spottrain.pipelines import create_pipeline
from spottrain.preemption import PreemptionNotice, report_exit_code
from spottrain.sampler import StepSampler
from spottrain.tracking import Tracker, flatten

log = logging.getLogger("spottrain")


def train(loaded: LoadedRecipe) -> int:
    """Run (or continue) the training run named by $SPOTTRAIN_RUN_ID. Returns the process exit code."""
    started = time.perf_counter()
    recipe, cfg = loaded.recipe, loaded.recipe.train
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        raise SystemExit(f"{RUN_ID_ENV} is not set: start training with `launch recipe {loaded.name}`, "
                         f"or export {RUN_ID_ENV}=<a name for this run>")
    notice = PreemptionNotice()
    ranks = runtime.init_distributed()
    logging.basicConfig(level=logging.INFO if ranks.is_main else logging.WARNING,
                        format=f"[rank {ranks.rank}] %(asctime)s %(name)s: %(message)s")
    runtime.seed_everything(cfg.seed)

    pipeline = create_pipeline(recipe)
    tokenizer = load_tokenizer(cfg.model.path)
    train_records, val_records = _records(cfg)
    train_set = EncodedDataset(train_records, tokenizer, cfg.data.max_length)
    val_set = EncodedDataset(val_records, tokenizer, cfg.data.max_length)
    sampler = StepSampler(pipeline.select(train_records), per_gpu=cfg.batch.per_gpu,
                          grad_accum=cfg.batch.grad_accum, world_size=ranks.world_size, rank=ranks.rank,
                          seed=cfg.seed)
    total_steps = sampler.total_steps(cfg.epochs, cfg.max_steps)
    model = pipeline.build_model(build_mtp_model(cfg.model.path, cfg.model.n_future_tokens, len(tokenizer),
                                                 cfg.seed), {"recipe": recipe})
    engine = build_engine(model, cfg, ranks.world_size, total_steps)
    checkpoints = Checkpointer(store=open_store(cfg.checkpoint.uri, cfg.checkpoint.endpoint_url),
                               local_root=Path(cfg.checkpoint.local_dir), run_id=run_id, ranks=ranks,
                               keep=cfg.checkpoint.keep)

    # --- resume --------------------------------------------------------------------------------------------
    state = {"step": 0, "best": None, "mlflow_run_id": None, "pipeline": {}}
    complete = checkpoints.complete_steps()
    if complete:
        manifest = checkpoints.manifest(complete[-1])
        if manifest.final:
            log.info("run %s already finished at step %d", run_id, manifest.step)
            report_exit_code(0)
            return 0
        state = checkpoints.restore(engine, manifest)
        pipeline.load_state_dict(state["pipeline"])
        log.info("resumed run %s at step %d from %s", run_id, state["step"], checkpoints.store.uri)
    tracker = _tracker(loaded, run_id, ranks, state["mlflow_run_id"]) if ranks.is_main else None
    if tracker:
        tracker.requeue(state.get("pending_metrics", []))  # what the last attempt had not sent yet

    # --- loop ----------------------------------------------------------------------------------------------
    step, best = state["step"], state["best"]
    first_step = step + 1
    progress = _progress_bar(ranks, step, total_steps)
    progress_file = checkpoints.local_dir / PROGRESS_FILE
    if ranks.is_main:
        _write_progress(progress_file, step, total_steps, attempt_start=step)
    while step < total_steps:
        lr = engine.get_lr()[0]
        step_started = time.perf_counter()
        metrics = _train_step(engine, pipeline, train_set, sampler.micro_batches(step))
        step += 1
        progress.update(1)
        if ranks.is_main:
            _write_progress(progress_file, step, total_steps, attempt_start=first_step - 1)
        if tracker and step == first_step:
            tracker.log({"perf/start_to_first_step_seconds": time.perf_counter() - started}, step)
        if step % cfg.log_every_steps == 0 or step == total_steps:
            logged = {**runtime.mean_across_ranks(metrics), "train/learning_rate": lr,
                      "train/epoch": sampler.epoch_of(step)}
            if tracker:
                tracker.log({**logged, "perf/step_seconds": time.perf_counter() - step_started,
                             "checkpoint/upload_retries": checkpoints.upload_retries}, step)
            progress.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in logged.items() if k.endswith("loss")})

        improved, evaluated = False, {}
        if step % cfg.eval.every_steps == 0 or step == total_steps:
            evaluated = _evaluate(engine, pipeline, val_set, cfg, ranks)
            if tracker:
                tracker.log(evaluated, step)
            improved = _improves(evaluated, best, cfg.checkpoint)
            if improved:
                best = {"step": step, "value": evaluated[cfg.checkpoint.best_metric]}

        preempted = runtime.all_ranks_agree(notice.received)
        final = step == total_steps
        if final or preempted or improved or step % cfg.checkpoint.every_steps == 0:
            trainer_state = {"step": step, "best": best, "run_id": run_id, "world_size": ranks.world_size,
                             "mlflow_run_id": tracker.mlflow_run_id if tracker else None,
                             "pending_metrics": tracker.pending() if tracker else [],
                             "pipeline": pipeline.state_dict()}
            save_started = time.perf_counter()
            extras = {name: consolidated_state_dict(module, cfg.deepspeed.zero_stage, ranks.is_main)
                      for name, module in pipeline.checkpoint_modules(engine.module).items()}
            checkpoints.save(engine, step, trainer_state, final=final, best=improved, metrics=evaluated,
                             extra_tensors=extras)
            if tracker:
                tracker.log({"perf/checkpoint_stall_seconds": time.perf_counter() - save_started}, step)
        if preempted and not final:
            log.warning("preemption notice: checkpointed step %d, waiting for the upload", step)
            checkpoints.wait()
            if tracker:
                tracker.close(status=None)
            report_exit_code(PREEMPTED_EXIT_CODE)
            return PREEMPTED_EXIT_CODE
    progress.close()

    # --- end -----------------------------------------------------------------------------------------------
    checkpoints.wait()
    _export_final(engine, pipeline, tokenizer, checkpoints, cfg, ranks, step)
    if ranks.is_main:
        checkpoints.verify(step)
        if tracker:
            tracker.close(status="FINISHED")
        print(f"run {run_id} finished at step {step}: checkpoints in {checkpoints.store.uri}/{run_id}, "
              f"final weights in {checkpoints.store.uri}/{run_id}/{layout.FINAL_EXPORT}", file=sys.stderr)
    checkpoints.close()
    report_exit_code(0)  # a signal that reaches torchrun after this point must not turn success into failure
    return 0


def _records(cfg) -> tuple[list[dict], list[dict]]:
    """Training records (at most n_samples) and validation records (a held-out tail of train when unset)."""
    records = load_records(cfg.data.train, split="train", seed=cfg.seed)
    if cfg.data.val:
        val = load_records(cfg.data.val, split="val", seed=cfg.seed)
    elif cfg.data.train == GENERATED:
        val = load_records(GENERATED, split="val", seed=cfg.seed)
    else:
        held_out = max(1, min(cfg.data.val_samples, len(records) // 20))
        records, val = records[:-held_out], records[-held_out:]
    if cfg.data.n_samples:
        records = records[: cfg.data.n_samples]
    return records, val


def _train_step(engine, pipeline, dataset, micro_batches) -> dict[str, torch.Tensor]:
    """One optimizer step: DeepSpeed accumulates over the micro-batches and steps at the boundary."""
    totals: dict[str, torch.Tensor] = {}
    for indices in micro_batches:
        batch = pipeline.make_batch(dataset, indices).to(runtime.device())
        loss, metrics = pipeline.loss(engine, batch)
        engine.backward(loss)
        engine.step()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value.float() / len(micro_batches)
    return totals


@torch.no_grad()
def _evaluate(engine, pipeline, dataset, cfg, ranks) -> dict[str, float]:
    """Mean validation loss over the first val_samples records, the same number of batches on every rank."""
    count = (min(len(dataset), cfg.data.val_samples) // ranks.world_size) * ranks.world_size
    mine = list(range(ranks.rank, count, ranks.world_size))
    engine.eval()
    total, seen = torch.zeros((), device=runtime.device()), 0
    for start in range(0, len(mine), cfg.batch.per_gpu):
        indices = mine[start:start + cfg.batch.per_gpu]
        batch = pipeline.make_batch(dataset, indices).to(runtime.device())
        total += pipeline.validation_loss(engine, batch).float() * len(indices)
        seen += len(indices)
    engine.train()
    return runtime.mean_across_ranks({"val/loss": total / max(1, seen)})


def _improves(evaluated: dict, best, checkpoint_cfg) -> bool:
    metric = checkpoint_cfg.best_metric
    if metric not in evaluated:
        raise ValueError(f"train.checkpoint.best_metric: {metric!r} is not evaluated by this pipeline "
                         f"(it reports {', '.join(sorted(evaluated))})")
    if best is None:
        return True
    value = evaluated[metric]
    return value < best["value"] if checkpoint_cfg.best_mode == "min" else value > best["value"]


def _tracker(loaded: LoadedRecipe, run_id: str, ranks, mlflow_run_id) -> Tracker:
    recipe = loaded.recipe
    params = flatten({k: v for k, v in recipe.model_dump(mode="json").items() if k != "profiles"})
    params.update({"launch.recipe": loaded.relpath, "launch.profile": str(loaded.profile),
                   "launch.overrides": " ".join(loaded.overrides) or "-", "launch.world_size": str(ranks.world_size)})
    tags = {"pipeline": recipe.pipeline, "gpu": recipe.resources.accelerator, "gpus": str(recipe.resources.gpus),
            "nodes": str(recipe.resources.nodes), "recipe": loaded.relpath,
            "git_commit": os.environ.get(GIT_COMMIT_ENV, "unknown"), **recipe.mlflow.tags}
    Path(recipe.train.checkpoint.local_dir).mkdir(parents=True, exist_ok=True)
    return Tracker(uri=mlflow_tracking_uri(recipe.mlflow.tracking_uri, recipe.train.checkpoint.local_dir),
                   experiment=recipe.mlflow.experiment, run_name=recipe.mlflow.run_name, run_id=run_id,
                   params=params, tags=tags, mlflow_run_id=mlflow_run_id)


def _export_final(engine, pipeline, tokenizer, checkpoints: Checkpointer, cfg, ranks, step: int) -> None:
    """Consolidate the weights (gathering ZeRO-3 partitions) and publish a from_pretrained directory."""
    mtp = pipeline.mtp_model(engine.module)
    state = consolidated_state_dict(mtp, cfg.deepspeed.zero_stage, ranks.is_main)
    if ranks.is_main:
        out_dir = checkpoints.local_dir / layout.FINAL_EXPORT
        export_pretrained(mtp, state, tokenizer, out_dir)
        checkpoints.publish_directory(out_dir, layout.FINAL_EXPORT)
    runtime.barrier()


def _write_progress(path: Path, step: int, total: int, attempt_start: int) -> None:
    """Where the run is, and where this attempt started: `launch status` and the supervisor's count of
    recomputed steps read it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps({"step": step, "total": total, "attempt_start": attempt_start}))
    os.replace(partial, path)


def _progress_bar(ranks, step: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=step, desc="train", unit="step", disable=not ranks.is_main,
                mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
