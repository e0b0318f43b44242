"""The script's process (torchrun, or python) under the wrapper: started with the node contract's environment, told
of a notice the way it can hear it, and read for why it failed.

Its stderr passes through line by line (the run's log is unchanged) while the last lines are kept: when the script
fails, the first failing rank's error is the run's one-line failure, and the exit code a rank asked for (75, 78)
is read from torchrun's report, since torchrun itself exits 1 for any failed worker.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

KEPT_LINES = 200
_RANK_PREFIX = re.compile(r"^\[(?:default)?rank(\d+)\]:\s?")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: |$)")
_ROOT_CAUSE = "Root Cause (first observed failure):"
_EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_TORCHRUN_SIGTERM = re.compile(r"SignalException: Process \d+ got signal: 15$")


class ScriptProcess:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Optional[Path] = None):
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
        self._reader = threading.Thread(target=self._pass_stderr, name="script-stderr", daemon=True)
        self._reader.start()

    def _pass_stderr(self) -> None:
        for raw in self.process.stderr:
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()
            self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def poll(self) -> Optional[int]:
        return self.process.poll()

    def wait(self) -> int:
        code = self.process.wait()
        self._reader.join(timeout=10)
        return code

    def terminate(self) -> None:
        """SIGTERM to the script (torchrun passes it to every rank): a script without an integration hears a
        notice only this way."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def ended_by_sigterm(self, code: int) -> bool:
        """The script died of the SIGTERM passed to it: its own code says so, or torchrun's (it exits 1 with a
        SignalException when a SIGTERM reaches it)."""
        return code in (-signal.SIGTERM, 128 + signal.SIGTERM) or any(
            _TORCHRUN_SIGTERM.search(line) for line in list(self.lines)[-5:])

    def asked_code(self, code: int) -> int:
        """The exit code the failing rank asked for, where torchrun reports one (it exits 1 itself)."""
        lines = list(self.lines)
        if _ROOT_CAUSE not in lines:
            return code
        for line in lines[lines.index(_ROOT_CAUSE):]:
            match = _EXITCODE.match(line)
            if match:
                return int(match.group(1))
        return code

    def failure(self, code: int) -> tuple[Optional[int], str]:
        """(the rank that failed first, where it can be told; its error in one line): the last error line of its
        traceback, else the last line it wrote, else what the exit code says."""
        lines = list(self.lines)
        cut = lines.index(_ROOT_CAUSE) if _ROOT_CAUSE in lines else len(lines)
        failed_rank = next((int(m.group(1)) for line in lines[cut:] if (m := _FAILED_RANK.match(line))), None)
        errors = []
        for line in lines[:cut]:
            prefix = _RANK_PREFIX.match(line)
            rank = int(prefix.group(1)) if prefix else None
            text = line[prefix.end():] if prefix else line
            if _ERROR_LINE.match(text.strip()) and (failed_rank is None or rank in (None, failed_rank)):
                errors.append((rank, text.strip()))
        if errors:
            rank, text = errors[-1]
            return (rank if rank is not None else failed_rank), text
        written = [line.strip() for line in lines[:cut] if line.strip()]
        if written:
            return failed_rank, written[-1]
        if code < 0:
            return failed_rank, f"killed by {signal.Signals(-code).name}"
        return failed_rank, f"exit code {code}, no error written"


def script_environment(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The script's environment: the job's, plus the node contract's (`extra`); unbuffered, so its lines reach the
    log as they are written."""
    return {**base, **extra, "PYTHONUNBUFFERED": "1"}

