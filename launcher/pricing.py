"""What a run cost in dollars: its preemption ledger's device-hours at the price of what it ran on.

The price of one node as the recipe asks for it (its accelerator × gpus, the first of each where it lists several;
spot or on-demand as `resources.spot` says) comes from, in order:

1. SkyPilot's catalog, for a run on SkyPilot, where a catalog is on this machine (`~/.sky/catalogs/<version>/
   <cloud>/vms.csv`, which SkyPilot itself downloads): the cheapest instance type with those GPUs in the region
   the job ran in where its record says (SkyPilot's job queue), else in the cheapest region of the catalogs on
   disk. Only files already on disk are read, never through SkyPilot's loader, which fetches a missing or stale
   catalog from the network without a time limit.
2. The recipe's `resources.price_per_hour`.

Neither: the dollars are unknown (None), never 0. A device-hour (a GPU-hour; a rank-hour on CPU, where a node runs
`gpus` ranks) costs the node's price ÷ its gpus, so a run that resumed on fewer GPUs pays for the GPUs it held. The
dollars lost to preemption are the ledger's lost device-hours (restarts' start-ups and recomputed steps) at the same
price. A run whose capacity list let it resume on another accelerator type is priced at its first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.registry import RunRecord
from spottrain_contract.errors import UserError
from spottrain_contract.ledger import Ledger
from spottrain_contract.recipe import from_shipped
from spottrain_contract.schema import Resources

SKYPILOT = "skypilot"
RECIPE_SOURCE = "recipe resources.price_per_hour"


@dataclass(frozen=True)
class Price:
    """Dollars per hour of one node as the recipe asks for it, and where that figure came from."""

    per_node_hour: float
    gpus_per_node: int  # the recipe's preferred count: ranks per node on CPU too
    source: str  # "skypilot catalog: aws us-east-1 spot p4d.24xlarge" or RECIPE_SOURCE

    @property
    def per_device_hour(self) -> float:
        return self.per_node_hour / self.gpus_per_node


@dataclass(frozen=True)
class RunCost:
    dollars_used: float  # every attempt's device-hours at the price
    dollars_lost: float  # the device-hours preemption cost (start-ups of restarts, recomputed steps)
    price: Price
    useful_steps: int  # the run's progress, for the price of a step

    @property
    def dollars_per_step(self) -> Optional[float]:
        """What a useful step cost (the lost dollars included); None before the first step."""
        return self.dollars_used / self.useful_steps if self.useful_steps else None


def run_cost(record: RunRecord, ledger: Ledger) -> Optional[RunCost]:
    """The run's dollars from its ledger; None where no price is known (or the run has no attempt yet)."""
    if not ledger.attempts:
        return None
    price = run_price(record)
    return cost_of_hours(price, ledger.device_hours, ledger.device_hours_lost, ledger.useful) if price else None


def cost_of_hours(price: Price, device_hours: float, device_hours_lost: float = 0.0,
                  useful_steps: int = 0) -> RunCost:
    """Dollars of device-hours read elsewhere (MLflow's `ledger/*` metrics, a sweep's cells) at `price`."""
    rate = price.per_device_hour
    return RunCost(dollars_used=device_hours * rate, dollars_lost=device_hours_lost * rate, price=price,
                   useful_steps=useful_steps)


def run_price(record: RunRecord) -> Optional[Price]:
    """The price of one of the run's nodes, from SkyPilot's catalog or the recipe (None: neither says)."""
    resources = recipe_resources(record)
    if resources is None:
        return None
    if record.target == SKYPILOT:
        found = catalog_price(resources, **_where(record))
        if found is not None:
            return found
    if resources.price_per_hour is not None:
        return Price(resources.price_per_hour, resources.preferred_gpus, RECIPE_SOURCE)
    return None


def unpriced(record: RunRecord) -> str:
    """Why a run has no price, for the line that says its dollars are unknown."""
    if recipe_resources(record) is None:
        return "no recipe recorded with the run to price it by"
    if record.target == SKYPILOT:
        return "no SkyPilot catalog on this machine prices it and the recipe sets no resources.price_per_hour"
    return "the recipe sets no resources.price_per_hour"


def recipe_resources(record: RunRecord) -> Optional[Resources]:
    """The resources of the recipe the run shipped (None: recorded before launches shipped their recipe)."""
    if not record.recipe_document:
        return None
    try:
        return from_shipped(record.recipe_document, f"run {record.run_id} in the run database").recipe.resources
    except UserError:
        return None


def _where(record: RunRecord) -> dict:
    """The cloud and region SkyPilot placed the job in, where its record keeps them (`SkyPilotHandle`)."""
    return {key: record.handle.get(key) or None for key in ("cloud", "region")}


# --- SkyPilot's catalog, from disk only -------------------------------------------------------------------------


def catalog_root() -> Path:
    """Where SkyPilot keeps its catalogs (`~/.sky/catalogs`, under SKY_RUNTIME_DIR where that is set), found
    without importing sky."""
    return Path(os.environ.get("SKY_RUNTIME_DIR", "~")).expanduser() / ".sky" / "catalogs"


def catalog_price(resources: Resources, cloud: Optional[str] = None,
                  region: Optional[str] = None) -> Optional[Price]:
    """The cheapest node with the recipe's first accelerator × gpus in the catalogs on disk (of `cloud` only,
    where given), in `region` where given; None where no catalog is on disk or none has such a node."""
    if not any(catalog_root().glob("*/*/vms.csv")):  # nothing to read: not even `import sky` (~1.5 s)
        return None
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    from sky.catalog import common
    from sky.skylet import constants

    clouds = [cloud.lower()] if cloud else sorted(constants.ALL_CLOUDS)
    offers = []
    for name in clouds:
        df = _catalog(common.get_catalog_path(f"{name}/vms.csv"))
        if df is not None:
            offer = _cheapest(common, df, resources, region)
            if offer is not None:
                offers.append((offer[0], name, *offer[1:]))
    if not offers:
        return None
    dollars, name, found_region, instance_type = min(offers)
    kind = "spot" if resources.spot else "on-demand"
    where = found_region if region else f"cheapest region {found_region}"
    return Price(dollars, resources.preferred_gpus, f"skypilot catalog: {name} {where} {kind} {instance_type}")


def _cheapest(common, df, resources: Resources, region: Optional[str]) -> Optional[tuple[float, str, str]]:
    """(dollars an hour, region, instance type) of the cheapest node in `df` with the GPUs asked for."""
    accelerator, gpus, spot = resources.accelerators[0], resources.preferred_gpus, resources.spot
    column = "SpotPrice" if spot else "Price"
    try:
        # rows without an instance type are GPUs a cloud attaches to a VM priced apart (GCP's T4, L4, V100)
        instance_types, _ = common.get_instance_type_for_accelerator_impl(
            df[df["InstanceType"].notna()], accelerator, gpus, use_spot=spot, region=region)
        if not instance_types:
            return None
        instance_type = instance_types[0]
        offered = df[(df["InstanceType"] == instance_type) & df[column].notna()]
        if region is not None:
            offered = offered[offered["Region"].str.lower() == region.lower()]
        found_region = str(offered.loc[offered[column].idxmin(), "Region"])
        dollars = common.get_hourly_cost_impl(df, instance_type, spot, found_region, None)
    except (KeyError, ValueError, TypeError, AssertionError):  # a catalog in another layout, no price of that kind
        return None
    return float(dollars), found_region, str(instance_type)


_frames: dict[str, tuple[float, object]] = {}  # path → (its mtime, the frame): the hub asks at every refresh


def _catalog(path: str):
    """The catalog file at `path` as a data frame, re-read only when it changes; None where there is none or it
    cannot be read."""
    import pandas as pd

    try:
        mtime = os.path.getmtime(path)
        cached = _frames.get(path)
        if cached is None or cached[0] != mtime:
            _frames[path] = (mtime, pd.read_csv(path))
        return _frames[path][1]
    except (OSError, ValueError):
        return None
