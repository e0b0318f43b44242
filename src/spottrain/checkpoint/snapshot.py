"""Asynchronous checkpoint writes through DeepSpeed's own extension point, its checkpoint engine.

DeepSpeed's `save_checkpoint` hands each file's state to `checkpoint_engine.save(state, path)`. This engine copies
every tensor into host memory there and returns: the loop stalls for that copy only. Host buffers are reused from
one save to the next; on a GPU node they are page-locked (cudaHostRegister) off the loop, reserved after the
first step or after their first write, so no save pays the page-locking of tens of GB and copies run at the link's
speed. The files are written later, by `take_writes()`'s callable on the checkpointer's upload thread, with the
engine DeepSpeed chose (torch.save and its serialisation setting), so they hold what a synchronous save writes,
the tensors as host tensors (DeepSpeed loads every file onto the CPU first anyway), and resume loads them
unchanged.

Why not DeepSpeed's FastCheckpointEngine/DecoupledCheckpointEngine: they need the compiled async_io op (libaio),
and the decoupled one commits from another process, out of the manifest-last order the checkpointer keeps; and
not torch.distributed.checkpoint's async_save: it writes another format, which DeepSpeed's load does not read.

Storage sharing is kept: each tensor storage is copied once and every view of it is rebuilt over the copy with
its own offset, size and stride, so torch.save sees the same sharing it would have seen.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


class SnapshotCheckpointEngine:
    """Wraps the engine DeepSpeed created: saves become snapshots, everything else (create, load, commit, its
    settings) is the wrapped engine's."""

    def __init__(self, inner):
        self.inner = inner
        self._writes: list[tuple[Any, str]] = []
        self._buffers: list[torch.UntypedStorage] = []  # the previous save's host copies, free again
        self._in_use: list[torch.UntypedStorage] = []
        self.allocated_in_loop = 0  # bytes of host memory the saves had to allocate themselves (none if reserved)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def save(self, state_dict, path: str) -> None:
        copies: dict[tuple[int, int], torch.UntypedStorage] = {}
        snapshot = _map_tensors(state_dict, lambda tensor: self._copy(tensor, copies))
        if torch.cuda.is_available():
            torch.cuda.current_stream().synchronize()  # the copies are done before the next step changes a weight
        self._writes.append((snapshot, path))

    def take_writes(self) -> Callable[[], None]:
        """The writes of the saves so far, as one callable (run it off the loop); the buffers they use are
        page-locked after writing and reused from the next `begin()`."""
        writes, self._writes = self._writes, []
        buffers = list(self._in_use)
        for unused in self._buffers:  # reserved for a storage this save did not have: let it go
            _unpin(unused)
        self._buffers = []
        device = _current_device()

        def write() -> None:
            for state, path in writes:
                self.inner.save(state, path)
            for buffer in buffers:
                _pin(buffer, device)

        return write

    def begin(self) -> None:
        """A new checkpoint starts: the last one's files are written (the checkpointer waited), so its host
        buffers are free for this one's copies."""
        self._buffers, self._in_use = self._buffers + self._in_use, []

    def reserve(self, engine) -> Callable[[], None]:
        """Host buffers for the engine's next save, as a callable to run off the loop (allocated and page-locked:
        tens of GB take seconds), so the first save's stall is a copy too: one buffer per storage of the state
        this rank writes, which DeepSpeed's save hands over as it is (the module state on the rank that writes
        the model file; the optimizer state on each rank that writes a ZeRO file, or with the model file when
        ZeRO is off). A size missed here is allocated at the save as before."""
        states = []
        if engine.save_non_zero_checkpoint:
            states.append(engine.module.state_dict())
        if engine.save_zero_checkpoint or (engine.save_non_zero_checkpoint and not engine.zero_optimization()):
            states.append(engine.optimizer.state_dict())
        sizes = [nbytes for _, nbytes in {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
                                          for state in states for t in _tensors_in(state)}]
        device = _current_device()

        def allocate() -> None:
            try:
                for nbytes in sizes:
                    buffer = torch.empty(nbytes, dtype=torch.uint8).untyped_storage()
                    _pin(buffer, device)
                    self._buffers.append(buffer)
            except RuntimeError as exc:  # host memory short: the save allocates what it needs, as without this
                log.warning("could not reserve %.1f GB of host memory for checkpoint snapshots: %s",
                            sum(sizes) / 1e9, exc)

        return allocate

    def _copy(self, tensor: torch.Tensor, copies: dict) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        host = copies.get(key)
        if host is None:
            host = copies[key] = self._buffer(storage.nbytes())
            host.copy_(storage, non_blocking=storage.device.type == "cuda" and host.is_pinned())
        view = torch.empty(0, dtype=tensor.dtype).set_(host, tensor.storage_offset(), tensor.size(), tensor.stride())
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(view, requires_grad=tensor.requires_grad)
        return view.requires_grad_(tensor.requires_grad)

    def _buffer(self, nbytes: int) -> torch.UntypedStorage:
        """A free host buffer of this size from the last save, else a new one."""
        for i, buffer in enumerate(self._buffers):
            if buffer.nbytes() == nbytes:
                found = self._buffers.pop(i)
                break
        else:
            found = torch.empty(nbytes, dtype=torch.uint8).untyped_storage()
            self.allocated_in_loop += nbytes
        self._in_use.append(found)
        return found


def _current_device():
    """This rank's GPU, to page-lock with on a background thread (None without one)."""
    return torch.cuda.current_device() if torch.cuda.is_available() else None


def _pin(buffer: torch.UntypedStorage, device) -> None:
    """Page-lock a host buffer in place (once), so device copies into it run asynchronously at full speed. Runs on
    a background thread: with this rank's device current there, so no context is made on GPU 0; a refusal
    leaves the buffer pageable (copies into it then block, as without pinning)."""
    if device is None or not buffer.nbytes() or buffer.is_pinned():
        return
    with torch.cuda.device(device):
        code = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.nbytes(), 0)
    if int(code) != 0:
        log.warning("could not page-lock %.1f GB of host memory (CUDA error %d): checkpoint snapshots copy slower",
                    buffer.nbytes() / 1e9, int(code))


def _unpin(buffer: torch.UntypedStorage) -> None:
    if torch.cuda.is_available() and buffer.nbytes() and buffer.is_pinned():
        torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())


def snapshotting(engine) -> SnapshotCheckpointEngine:
    """The engine's checkpoint engine, made a snapshot one the first time."""
    if not isinstance(engine.checkpoint_engine, SnapshotCheckpointEngine):
        engine.checkpoint_engine = SnapshotCheckpointEngine(engine.checkpoint_engine)
    return engine.checkpoint_engine


def _tensors_in(value):
    """Every tensor in nested dicts, lists and tuples (what `_map_tensors` copies)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)


def _map_tensors(value, copy_tensor: Callable[[torch.Tensor], torch.Tensor]):
    """`value` with every tensor replaced by its copy, through the containers DeepSpeed's own
    clone_tensors_for_torch_save walks (dicts of any kind, lists, tuples); every other value is deep-copied, so
    nothing in the snapshot changes with the live state, and keeps its type (a torch.Size stays one)."""
    if isinstance(value, torch.Tensor):
        return copy_tensor(value)
    if isinstance(value, dict):
        copied = copy.copy(value)
        for key, item in value.items():
            copied[key] = _map_tensors(item, copy_tensor)
        return copied
    if isinstance(value, list):
        return [_map_tensors(item, copy_tensor) for item in value]
    if type(value) is tuple:
        return tuple(_map_tensors(item, copy_tensor) for item in value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_map_tensors(item, copy_tensor) for item in value))
    return copy.deepcopy(value)
