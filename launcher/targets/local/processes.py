"""Every process of one job attempt, found by a marker in its environment.

torchrun starts each trainer in a session of its own, so signalling the script's process group misses them,
and a trainer whose torchrun died is re-parented away from the supervisor. The marker survives both: it is
inherited by every process the attempt starts.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil

ATTEMPT_ENV = "SPOTTRAIN_ATTEMPT"


def alive(pid) -> bool:
    """Whether process `pid` is running. A zombie is not: a supervisor the hub started and another shell stopped
    stays a zombie until the hub reaps it, and waiting on it would wait out the whole grace period. Our own
    exited child is reaped here."""
    if not pid:
        return False
    try:
        os.waitpid(int(pid), os.WNOHANG)
    except (ChildProcessError, ValueError):
        pass
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def new_marker() -> str:
    return uuid.uuid4().hex


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(ATTEMPT_ENV) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def signal_marked(marker: str, sig: int) -> int:
    """Send `sig` to every live process of the attempt; returns how many were signalled."""
    count = 0
    for process in marked(marker):
        try:
            process.send_signal(sig)
            count += 1
        except psutil.NoSuchProcess:
            pass
    return count


def wait_marked_gone(marker: str, grace: float) -> None:
    """Wait until the attempt has no process left (they may be finishing a checkpoint), then kill the rest."""
    deadline = time.monotonic() + grace
    while marked(marker):
        if time.monotonic() > deadline:
            signal_marked(marker, signal.SIGKILL)
            time.sleep(0.2)
            return
        time.sleep(0.1)
