"""Checkpoint transfers a person can watch: bytes, rate and ETA at most every few seconds while a checkpoint
moves between the node's disk and the store, and the totals, which the trainer sends to MLflow."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("spottrain.transfers")


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


class TransferMeter:
    """Counts the bytes of one upload or download (boto3 calls it from its transfer threads)."""

    def __init__(self, what: str, total: int, every: float = 10.0):
        self.what, self.total, self.every = what, total, every
        self.done = 0
        self._started = self._shown = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self._shown < self.every:
                return
            self._shown = now
            rate = self.done / max(now - self._started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %s of %s, %s/s, ETA %.0f s", self.what, _size(self.done), _size(self.total),
                     _size(rate), eta)

    def finish(self) -> tuple[int, float]:
        """(bytes moved, seconds taken), said once in the log."""
        seconds = time.monotonic() - self._started
        if self.done:
            log.info("%s: %s in %.1f s (%s/s)", self.what, _size(self.done), seconds,
                     _size(self.done / max(seconds, 1e-9)))
        return self.done, seconds
