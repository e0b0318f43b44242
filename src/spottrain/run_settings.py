"""The settings a run was launched with, kept in its store: every attempt of the run, the trainer's or a command
script's, checks its own against them before it trains."""

from __future__ import annotations

from spottrain_contract import layout
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.recipe import LoadedRecipe, from_shipped, setting_changes
from spottrain_contract.store import CheckpointStore, with_retries


def settings_as_launched(store: CheckpointStore, run_id: str, loaded: LoadedRecipe) -> list[str]:
    """A run trains the settings it was launched with: the first attempt keeps them in the store, a later one
    must match them, unless its launch allowed changes (then they are the run's settings from here on). Returns
    the changes this attempt makes, to be logged at the step it resumes from."""
    key = f"{run_id}/{layout.LAUNCHED_RECIPE}"
    stored = with_retries(lambda: store.get_bytes(key), what=f"read {key}")
    changes = setting_changes(from_shipped(stored.decode(), key).recipe, loaded.recipe) if stored else []
    if changes and not loaded.changes:
        raise ConfigurationError(
            f"run {run_id} was launched with other settings ({'; '.join(changes)}): resume it with `launch recipe "
            f"{loaded.name} --run-id {run_id}` (the launch's own settings), or pass --allow-changes")
    if stored is None or changes:
        with_retries(lambda: store.put_bytes(loaded.shipped().encode(), key), what=f"write {key}")
    return changes
