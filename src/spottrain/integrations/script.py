"""Spot-safe checkpoints for a plain PyTorch script (or any script): where to save, what to resume from, when to
stop. Standard library only, so it adds nothing to what the script imports.

Usage (the lines a script adds):

    from spottrain.integrations import script as spottrain

    start = load(spottrain.resume_dir()) if spottrain.resume_dir() else fresh()
    for step in range(start, total):
        ...
        spottrain.report(step + 1, total, **{"train/loss": loss})
        if due or stop:  # stop: spottrain.should_stop(), agreed by every rank (see should_stop)
            path = save(spottrain.checkpoint_dir() / f"step-{step + 1}")
            spottrain.checkpoint_saved(path, step + 1)
        if stop:
            return  # exit 0: the wrapper knows a stop was asked for and starts the run again
    save_weights(spottrain.export_dir())  # the final weights: published as the run's final-hf/

Outside spottrain (no SPOTTRAIN_RUN_ID) every function does nothing: `checkpoint_dir` is the default given,
`resume_dir` None, `should_stop` False.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional

from spottrain_contract.job import RUN_ID_ENV
from spottrain_contract.script import (ATTACHED, CHECKPOINT_DIR_ENV, CONTROL_DIR_ENV, EXPORT_DIR_ENV, PROGRESS,
                                       RESUME_DIR_ENV, SAVED, append_event, stage, stop_requested)


class _Process:
    """What this process has done once: the `attached` event, the SIGTERM handler, a SIGTERM seen."""

    attached = False
    watching = False
    terminated = False
    previous: Any = None


def _control_dir() -> Optional[Path]:
    """The control directory, or None outside spottrain."""
    if not os.environ.get(RUN_ID_ENV) or not os.environ.get(CONTROL_DIR_ENV):
        return None
    return Path(os.environ[CONTROL_DIR_ENV])


def _rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def attach(framework: str = "pytorch") -> None:
    """Tell the wrapper, once, that an integration is in the script: a preemption notice then becomes the stop
    file instead of a SIGTERM to the ranks. The first report(), checkpoint_saved() or should_stop() calls it (not
    checkpoint_dir() nor resume_dir(), which a script asks before its framework starts); a framework callback
    calls it when training begins, so that its name is the one recorded."""
    control = _control_dir()
    if control is None or _Process.attached:
        return
    _Process.attached = True
    if _rank_zero():
        append_event(control, ATTACHED, framework=framework)


def checkpoint_dir(default: str | Path = "checkpoints") -> Path:
    """Where to save checkpoints: SPOTTRAIN_CHECKPOINT_DIR (the newest complete checkpoint already restored into
    it), or `default` outside spottrain."""
    value = os.environ.get(CHECKPOINT_DIR_ENV) if _control_dir() is not None else None
    return Path(value or default)


def export_dir(default: str | Path = "final") -> Path:
    """Where to write the final weights: SPOTTRAIN_EXPORT_DIR (published as the run's final export when the script
    exits 0), or `default` outside spottrain."""
    value = os.environ.get(EXPORT_DIR_ENV) if _control_dir() is not None else None
    return Path(value or default)


def resume_dir() -> Optional[Path]:
    """The restored checkpoint to resume from (as the script saved it: a directory or a file), or None on a run's
    first attempt and outside spottrain."""
    value = os.environ.get(RESUME_DIR_ENV) if _control_dir() is not None else None
    return Path(value) if value else None


def report(step: int, total: Optional[int] = None, **metrics: float) -> None:
    """Progress after `step` (of `total`), with metrics as the run's MLflow run should show them (rank 0 only)."""
    control = _control_dir()
    if control is None or not _rank_zero():
        return
    attach()
    numbers = {name: float(value) for name, value in metrics.items() if isinstance(value, (int, float))}
    append_event(control, PROGRESS, step=int(step), total=None if total is None else int(total), metrics=numbers)


def checkpoint_saved(path: str | Path, step: int, metric: Optional[float] = None) -> Optional[Path]:
    """Make a completed checkpoint (a directory or a file) known: staged, then the `saved` event; `metric` is the
    value the recipe's best_metric picks the best by. Only rank 0 acts, so every rank may call it, but the checkpoint
    must be complete when rank 0 does (call it after the barrier that ends a sharded save). Returns the staged path
    on rank 0."""
    control = _control_dir()
    if control is None or not _rank_zero():
        return None
    attach()
    staged = stage(control, Path(path), int(step))
    append_event(control, SAVED, step=int(step), name=Path(path).name,
                 metric=None if metric is None else float(metric))
    return staged


def should_stop() -> bool:
    """True once a stop is asked for: the wrapper's stop file (a preemption notice, a person's stop), or a SIGTERM
    to this process. The first call installs the SIGTERM handler (main thread only; it chains the Python handler
    it replaces) and writes `attached`.

    Ranks see the stop at different steps: agree before acting, e.g.
    `stop = torch.tensor(int(should_stop())); dist.all_reduce(stop, op=dist.ReduceOp.MAX)`."""
    control = _control_dir()
    if control is None:
        return False
    attach()
    catch_sigterm()
    return _Process.terminated or stop_requested(control)


def catch_sigterm(chain: bool = True) -> None:
    """Make SIGTERM set the flag should_stop() reads instead of ending the process (from the main thread; signals
    cannot be set elsewhere). `chain=True` (once) calls the Python handler it replaces after setting the flag;
    `chain=False` replaces whatever handles SIGTERM now, even if that replaced this one (the Lightning callback:
    Lightning installs its own at fit, which would end fit with an exception before anything is saved)."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm or (chain and _Process.watching):
        return
    _Process.previous = current if chain and callable(current) else None
    signal.signal(signal.SIGTERM, _on_sigterm)
    _Process.watching = True


def _on_sigterm(signum, frame) -> None:
    _Process.terminated = True
    if _Process.previous is not None:
        _Process.previous(signum, frame)
