"""Small files a task keeps with its run in the store (`<run id>/task/<name>`): what every later attempt and
every evaluation of the run must see exactly as the first attempt decided it (the ranker's data split), even if
the inputs it was computed from change meanwhile."""

from __future__ import annotations

from typing import Callable, Optional

from spottrain import runtime
from spottrain_contract import layout
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.store import CheckpointStore, with_retries


class RunFiles:
    def __init__(self, store: CheckpointStore, run_id: str, *, writable: bool = True):
        """`writable=False` for a reader of a finished run (evaluation, prediction): nothing is ever made."""
        self.store, self.run_id, self.writable = store, run_id, writable

    def key(self, name: str) -> str:
        return f"{self.run_id}/{layout.TASK_FILES}/{name}"

    def read(self, name: str) -> Optional[bytes]:
        return with_retries(lambda: self.store.get_bytes(self.key(name)), what=f"read {self.key(name)}")

    def once(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The run's file `name`: as an earlier attempt stored it, else made now and stored by rank 0; the same
        bytes on every rank."""
        return runtime.decided_by_rank_zero(lambda: self._read_or_make(name, make))

    def _read_or_make(self, name: str, make: Callable[[], bytes]) -> bytes:
        stored = self.read(name)
        if stored is not None:
            return stored
        if not self.writable:
            raise ConfigurationError(f"run {self.run_id} keeps no {layout.TASK_FILES}/{name} in {self.store.uri}: "
                                     f"was it trained by this task, and has it started?")
        data = make()
        with_retries(lambda: self.store.put_bytes(data, self.key(name)), what=f"write {self.key(name)}")
        return data
