"""A run's checkpoint store as this machine reads it, found from the run's record alone (never from a request):
what `launch status RUN`'s ledger and the hub's checkpoint and ledger panels read."""

from __future__ import annotations

from typing import Callable, TypeVar

from launcher.errors import LaunchError
from launcher.registry import RunRecord
from launcher.targets import get_target
from spottrain_contract.recipe import from_shipped
from spottrain_contract.store import CheckpointStore, open_store, store_failure

T = TypeVar("T")


def run_store(record: RunRecord) -> CheckpointStore:
    """The record's store with its recipe's S3 endpoint, asked with one retry, not a job's ten: a command or a page
    answers in seconds when the store is out of reach from here. A platform run's store on its node's own disk
    is not on this machine: reading the same path here would show another run's files or none."""
    if "://" not in record.store and not get_target(record.target).RUNS_HERE:
        raise LaunchError(f"run {record.run_id}: its checkpoints are on its node's disk ({record.store}), "
                          f"not readable from here")
    endpoint = None
    if record.recipe_document:
        endpoint = from_shipped(record.recipe_document, record.run_id).recipe.train.checkpoint.endpoint_url
    return open_store(record.store, endpoint, attempts=2)


def read_from_store(record: RunRecord, what: str, read: Callable[[CheckpointStore], T]) -> T:
    """`read(store)`, with a store out of reach or refusing (no credentials here, a bucket that is not there) as
    one line naming what was not read and why, not a traceback."""
    store = run_store(record)
    try:
        return read(store)
    except Exception as exc:  # boto3 and the filesystem raise many types; every one means "cannot read"
        raise LaunchError(f"{what} of run {record.run_id} not read from {record.store}: {store_failure(exc)}") from None
