"""The local supervisor: runs one registered run's script until it finishes, like a managed spot job would.

    python -m launcher.targets.local.supervisor --project DIR --run-id RUN \
        [--chaos kills=5,signals=KILL+TERM,every=2:8,seed=1]

A preemption exit (75) always restarts the script; a crash restarts it up to the recipe's
`max_restarts_on_errors`; the do-not-restart exit (78: bad settings or inputs, a store that refuses writes)
never. SIGTERM to the supervisor (`launch stop`, the hub's Stop, Ctrl-C of a foreground run) is passed to the job,
once the run's stop-request file says it is a person's stop (the ledger counts the attempt `stopped`, not
preempted); the job checkpoints and exits, and the run ends as stopped. Chaos mode kills the job's process group
at random moments (SIGKILL and SIGTERM, checkpoint uploads included) a given number of times, to prove nothing is
lost; with `ranks=1+2` the restarts after kills get those rank counts in turn (1, 2, 1, …), as spot capacity comes
back in another shape.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError
from launcher.registry import Registry
from launcher.render import with_ranks
from launcher.targets.local import LocalHandle, processes
from spottrain_contract.job import (DO_NOT_RESTART_EXIT_CODE, EXIT_FILE_ENV, PREEMPTED_EXIT_CODE, RunState,
                                    exit_file_path, failure_path, progress_path, stop_request_path)

GRACE_SECONDS = 120.0
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}
# how an attempt asked to stop may end and still be `stopped`: checkpointed (0, 75), or dead of the SIGTERM itself
# before the trainer set its handler (still starting: it had trained nothing a checkpoint would keep)
_STOPPED_CODES = (0, PREEMPTED_EXIT_CODE, -signal.SIGTERM, 128 + signal.SIGTERM)


@dataclass(frozen=True)
class Chaos:
    kills: int
    signals: tuple[int, ...]
    every: tuple[float, float]
    seed: int
    ranks: tuple[int, ...] = ()  # rank counts the restarts get in turn (empty: the recipe's)

    @classmethod
    def parse(cls, spec: str) -> "Chaos":
        """`kills=5,signals=KILL+TERM,every=2:8,seed=1,ranks=1+2` (every: seconds of training before each kill,
        drawn uniformly; ranks: the rank counts the restarts get in turn)."""
        try:
            fields = dict(item.split("=", 1) for item in spec.split(","))
            low, high = (float(x) for x in fields.get("every", "2:8").split(":"))
            ranks = tuple(int(n) for n in fields["ranks"].split("+")) if "ranks" in fields else ()
            if any(n < 1 for n in ranks):
                raise ValueError("ranks must be at least 1")
            return cls(kills=int(fields["kills"]),
                       signals=tuple(_SIGNALS[s] for s in fields.get("signals", "KILL+TERM").split("+")),
                       every=(low, high), seed=int(fields.get("seed", 0)), ranks=ranks)
        except (KeyError, ValueError) as exc:
            raise LaunchError(f"--chaos: expected kills=N[,signals=KILL+TERM][,every=LOW:HIGH][,seed=S]"
                              f"[,ranks=N+M], got {spec!r} ({exc})") from None


class Supervisor:
    def __init__(self, registry: Registry, run_id: str, chaos: Optional[Chaos] = None):
        self.registry, self.run_id, self.chaos = registry, run_id, chaos
        self.record = registry.get(run_id)
        self.stop_requested = threading.Event()
        self.process: Optional[subprocess.Popen] = None
        self.marker = ""
        self.kills_done = 0
        self.steps_computed = 0
        self.attempts = 0
        self._final_step = 0
        self._start_step: Optional[int] = None  # where the first attempt that trained started (a resumed run: > 0)
        self._random = random.Random(chaos.seed if chaos else 0)

    def run(self) -> int:
        stop_request_path(self.record.local_dir, self.run_id).unlink(missing_ok=True)  # an earlier launch's stop
        signal.signal(signal.SIGTERM, self._request_stop)
        budget = LocalHandle.of(self.record).max_restarts_on_errors
        while True:
            code = self._attempt()
            if self.stop_requested.is_set():
                return self._end(RunState.STOPPED if code in _STOPPED_CODES else RunState.FAILED, code)
            if code == 0:
                return self._end(RunState.FINISHED, code)
            if code == DO_NOT_RESTART_EXIT_CODE:  # the job said why; a restart would only say it again
                return self._end(RunState.FAILED, code)
            if code != PREEMPTED_EXIT_CODE and code != -signal.SIGKILL:
                budget -= 1
                if budget < 0:
                    return self._end(RunState.FAILED, code)
            self.record = self.registry.update(self.run_id, state=RunState.RESTARTING,
                                               restarts=self.record.restarts + 1)

    def _attempt(self) -> int:
        """One run of the script. Its code is the trainer's own (from the exit file), read only once every
        process of the attempt is gone: a torchrun that dies of a second SIGTERM leaves its trainers finishing
        their checkpoint, and the next attempt must not start beside them."""
        exit_file = exit_file_path(self.record.local_dir, self.run_id)
        exit_file.parent.mkdir(parents=True, exist_ok=True)
        exit_file.unlink(missing_ok=True)
        failure_path(self.record.local_dir, self.run_id).unlink(missing_ok=True)
        self.marker = processes.new_marker()
        env = {**os.environ, EXIT_FILE_ENV: str(exit_file), processes.ATTEMPT_ENV: self.marker}
        self.process = subprocess.Popen(["bash", "-c", self._script()], cwd=self.registry.project_dir,
                                        env=env, start_new_session=True)
        self.record = self.registry.update(self.run_id, state=RunState.RUNNING,
                                           handle=LocalHandle(attempt=self.marker).entries())
        if self.chaos and self.kills_done < self.chaos.kills:
            threading.Thread(target=self._chaos_kill, args=(self.process, self.marker), daemon=True).start()
        code = self.process.wait()
        processes.wait_marked_gone(self.marker, GRACE_SECONDS)
        reported = exit_file.read_text().strip() if exit_file.is_file() else ""
        code = int(reported) if reported else code
        progress = self._progress()
        computed = "no step"
        if progress.get("attempt_start") is not None:  # absent if this attempt died before resuming
            self.steps_computed += max(0, progress["step"] - progress["attempt_start"])
            if self._start_step is None:
                self._start_step = progress["attempt_start"]
            computed = f"steps {progress['attempt_start']}→{progress['step']}"
        self._clear_progress()
        self.attempts += 1
        print(f"[supervisor] attempt {self.attempts}: {computed}, exit code {code}", file=sys.stderr, flush=True)
        return code

    def _script(self) -> str:
        """The run script; under chaos with `ranks`, the restarts after kills get those rank counts in turn
        (torchrun's --nproc_per_node, as a platform's run script takes it from the GPUs present)."""
        script = LocalHandle.of(self.record).script
        if not (self.chaos and self.chaos.ranks and self.kills_done):
            return script
        ranks = self.chaos.ranks[(self.kills_done - 1) % len(self.chaos.ranks)]
        print(f"[supervisor] chaos: this attempt gets {ranks} rank{'s' if ranks > 1 else ''}", file=sys.stderr,
              flush=True)
        return with_ranks(script, ranks)

    def _chaos_kill(self, process: subprocess.Popen, marker: str) -> None:
        """The clock starts when the attempt starts training (its `attempt_start` in the progress file): a kill
        during start-up would only test start-up, and what must survive is training, checkpoints and uploads."""
        delay = self._random.uniform(*self.chaos.every)
        sig = self._random.choice(self.chaos.signals)
        while self._progress().get("attempt_start") is None:
            if self.stop_requested.wait(0.05) or process.poll() is not None:
                return
        if self.stop_requested.wait(delay) or process.poll() is not None:
            return
        print(f"[supervisor] chaos: {signal.Signals(sig).name} to the job {delay:.1f} s into training",
              file=sys.stderr, flush=True)
        self.kills_done += 1
        if sig == signal.SIGKILL:
            processes.signal_marked(marker, sig)  # everything dies at once, as when a spot VM vanishes
        else:
            process.send_signal(sig)  # the notice reaches the script, which passes it down

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested.set()
        self.registry.update(self.run_id, state=RunState.STOPPING)
        requested = stop_request_path(self.record.local_dir, self.run_id)
        try:  # before the SIGTERM: the trainer tells a person's stop from a spot notice by it
            requested.parent.mkdir(parents=True, exist_ok=True)
            requested.touch()
        except OSError as exc:  # the stop goes on; the ledger will call it a preemption
            print(f"[supervisor] could not write {requested}: {exc}", file=sys.stderr, flush=True)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            threading.Thread(target=self._kill_after_grace, args=(self.process,), daemon=True).start()

    def _kill_after_grace(self, process: subprocess.Popen) -> None:
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            processes.signal_marked(self.marker, signal.SIGKILL)

    def _progress(self) -> dict:
        path = progress_path(self.record.local_dir, self.run_id)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _clear_progress(self) -> None:
        """Keep `step` for status, drop `attempt_start` so a dead next attempt is not counted twice."""
        progress = self._progress()
        progress.pop("attempt_start", None)
        path = progress_path(self.record.local_dir, self.run_id)
        if progress:
            path.write_text(json.dumps(progress))
        self._final_step = progress.get("step", 0)

    def _failure(self, code: int) -> str:
        """Why the last attempt failed: the first error of the first rank that failed, else what the exit says."""
        try:
            return failure_path(self.record.local_dir, self.run_id).read_text().strip()
        except OSError:
            if code < 0:
                return f"killed by {signal.Signals(-code).name}"
            return f"exit code {code}, no error reported"

    def _end(self, state: RunState, code: int) -> int:
        final = self._final_step
        recomputed = self.steps_computed - (final - (self._start_step or 0))  # computed beyond the useful steps
        failure = {"failure": self._failure(code)} if state is RunState.FAILED else {}
        ended = LocalHandle(exit_code=code, chaos_kills=self.kills_done, steps_computed=self.steps_computed,
                            final_step=final, **failure)
        self.registry.update(self.run_id, state=state, ended=time.time(), handle=ended.entries())
        print(f"[supervisor] run {self.run_id} {state}: {final} steps, {self.steps_computed} computed "
              f"({recomputed} recomputed), {self.record.restarts} restarts, "
              f"{self.kills_done} chaos kills", file=sys.stderr, flush=True)
        return 0 if state in (RunState.FINISHED, RunState.STOPPED) else 1


LOCKS_DIR = "runs/locks"
ALREADY_SUPERVISED_EXIT_CODE = 3


def main(argv=None) -> int:
    """One supervisor per run id, ever at once: it holds the run's file lock for its whole life (the kernel
    drops it when the process dies, however it dies). A second one exits at once, touching nothing."""
    from filelock import FileLock, Timeout

    parser = argparse.ArgumentParser(prog="python -m launcher.targets.local.supervisor")
    parser.add_argument("--project", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--chaos", default=None)
    args = parser.parse_args(argv)
    chaos = Chaos.parse(args.chaos) if args.chaos else None
    lock_path = args.project / LOCKS_DIR / f"{args.run_id}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=0):
            return Supervisor(Registry(args.project), args.run_id, chaos).run()
    except Timeout:
        print(f"[supervisor] run {args.run_id} already has a live supervisor: not starting a second one",
              file=sys.stderr, flush=True)
        return ALREADY_SUPERVISED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
