"""Spot-safe Lightning: progress to the run's MLflow run, a `last.ckpt` in the checkpoint directory every N steps,
on a stop request and at max_steps, each made durable; a stop ends fit() normally (exit 0) after that save.

Usage (the line a script adds, plus what to resume from):

    from spottrain.integrations import script as spottrain
    from spottrain.integrations.lightning import SpottrainCallback

    trainer = L.Trainer(max_steps=..., callbacks=[SpottrainCallback(every_n_steps=100)])
    trainer.fit(model, data, ckpt_path=spottrain.resume_dir())

The scheme, the simplest that holds: this callback saves through `trainer.save_checkpoint` (every rank calls it,
rank 0 writes, all wait) from `on_train_batch_end`, as ModelCheckpoint does, so the one file it rewrites is
complete when it is staged. Your own ModelCheckpoint callbacks keep working but are not uploaded; only
`last.ckpt` is what the next attempt resumes from.

SIGTERM: Lightning installs its own handler when fit starts; on SIGTERM it raises SIGTERMException (a SystemExit)
at the next batch without saving. The callback replaces it for the fit (Lightning restores the handler from before
fit at teardown) with spottrain's flag, so a SIGTERM is one more stop request: save, stop, return from fit().

Resuming mid-epoch is exact only if the batches after the restored step are the ones the interrupted run had not
seen: Lightning restarts a plain DataLoader's epoch from its first batch (see examples/lightning/train.py for
data that continues from `trainer.global_step`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning.pytorch as pl

from spottrain.integrations import script


class SpottrainCallback(pl.Callback):
    """Saves `filename` under `dirpath` (spottrain's checkpoint directory by default) every `every_n_steps`
    optimizer steps (None: only on a stop and at max_steps), stops on a request, reports `trainer.callback_metrics`
    each step; `monitor` names the logged metric a saved checkpoint carries for the recipe's best_metric."""

    def __init__(self, every_n_steps: Optional[int] = None, monitor: Optional[str] = None,
                 dirpath: Optional[str | Path] = None, filename: str = "last.ckpt"):
        self.every_n_steps = every_n_steps
        self.monitor = monitor
        self.path = Path(dirpath or script.checkpoint_dir()) / filename
        self._last_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        script.attach("lightning")
        script.catch_sigterm(chain=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:  # a micro-batch of gradient accumulation: no optimizer step yet
            return
        self._last_step = step
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
        script.report(step, trainer.max_steps if trainer.max_steps > 0 else None, **metrics)
        stop = trainer.strategy.reduce_boolean_decision(script.should_stop(), all=False)
        due = bool(self.every_n_steps) and step % self.every_n_steps == 0
        if stop or due or step == trainer.max_steps:
            trainer.save_checkpoint(self.path)
            script.checkpoint_saved(self.path, step, metric=metrics.get(self.monitor) if self.monitor else None)
        if stop:
            trainer.should_stop = True
