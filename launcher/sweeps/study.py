"""A sweep's Optuna study: Optuna is the decision engine (its samplers draw trials, its pruners judge cells), its
study kept in the run database beside the runs (the same SQLite file, or PostgreSQL), named by the sweep id.

One Optuna trial per cell. A grid cell is enqueued with its axes' entries as categorical parameters, so the study
shows what each cell set; a sampled trial draws every axis's entry and every `space` key's value. Cells report
their metric at the optimizer step it was evaluated at (Optuna's step is an integer): a budget in epochs is turned
into steps with the cell's steps per epoch (`pruner_for`). Optuna is imported only here, and only by a sweep that
prunes or samples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from launcher.rundb.engine import BUSY_TIMEOUT_MS, database_url, sqlite_file
from spottrain_contract.search import Distribution, Search, cell_from
from spottrain_contract.sweep import Axes, Cell

if TYPE_CHECKING:
    import optuna

CELL_ATTR = "spottrain.cell"  # on each trial: the cell it is
MEDIAN_STARTUP_CELLS = 2  # median: cells judged only once this many have finished (Optuna's n_startup_trials)


def open_study(db_url: str, sweep_id: str, search: Search) -> "optuna.Study":
    """The sweep's study, made on first use (load_if_exists: a restarted controller finds it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = database_url(None, db_url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if sqlite_file(url) is not None:  # other processes write the file too: wait for its lock as the runs do
        engine_kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000}}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    return optuna.create_study(storage=storage, study_name=sweep_id, load_if_exists=True,
                               direction="minimize" if search.mode == "min" else "maximize",
                               sampler=_sampler(search))


def _sampler(search: Search) -> "optuna.samplers.BaseSampler":
    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed)


def distributions(axes: Axes, search: Search) -> dict[str, "optuna.distributions.BaseDistribution"]:
    """Each axis as a categorical choice of its entries, each space key as its distribution."""
    from optuna.distributions import CategoricalDistribution

    found = {axis: CategoricalDistribution(list(entries)) for axis, entries in axes.items()}
    found.update({key: _optuna_distribution(d) for key, d in search.space.items()})
    return found


def _optuna_distribution(written: Distribution):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    low_high = written.values[:2]
    return {"log_uniform": lambda: FloatDistribution(*low_high, log=True),
            "uniform": lambda: FloatDistribution(*low_high),
            "int": lambda: IntDistribution(*low_high),
            "log_int": lambda: IntDistribution(*low_high, log=True),
            "choice": lambda: CategoricalDistribution(list(written.values))}[written.kind]()


def new_grid_trial(study: "optuna.Study", axes: Axes, search: Search, cell: Cell) -> "optuna.Trial":
    """A trial for grid cell `cell`, its entries as the trial's parameters."""
    study.enqueue_trial(dict(cell.entries), skip_if_exists=False)
    trial = study.ask(distributions(axes, search))
    trial.set_user_attr(CELL_ATTR, cell.name)
    return trial


def new_sampled_trial(study: "optuna.Study", axes: Axes, search: Search, name_of) -> tuple["optuna.Trial", Cell]:
    """A trial the sampler draws, and its cell: the drawn axes' entries with their overrides, then the drawn
    space values. `name_of(trial number)` names the cell."""
    trial = study.ask(distributions(axes, search))
    cell = cell_from(trial.params, axes, search, name_of(trial.number))
    trial.set_user_attr(CELL_ATTR, cell.name)
    return trial, cell


def pruner_for(search: Search, steps_per_unit: float, full_steps: int) -> "optuna.pruners.BasePruner":
    """The search's pruner, its resources in optimizer steps (`steps_per_unit`: 1 for a budget in steps, the
    cell's steps per epoch for one in epochs)."""
    import optuna

    first = max(1, math.ceil((search.min_budget or 0) * steps_per_unit))
    if search.method == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=search.reduction_factor,
                                                      min_early_stopping_rate=0)
    if search.method == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max(first, full_steps),
                                              reduction_factor=search.reduction_factor)
    if search.method == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_CELLS,
                                           n_warmup_steps=math.ceil((search.min_budget or 0) * steps_per_unit))
    raise ValueError(f"method {search.method} prunes nothing")


def completed_rungs(trial: "optuna.trial.FrozenTrial") -> dict[int, float]:
    """{rung index: the value the cell reached it with}, as Optuna's successive halving recorded them (Hyperband's
    brackets record theirs the same way)."""
    prefix = "completed_rung_"
    return {int(key[len(prefix):]): value for key, value in trial.system_attrs.items() if key.startswith(prefix)}
