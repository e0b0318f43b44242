"""`launch status RUN`'s preemption ledger: each attempt of the run and what preemption cost it, read from the
run's store (`spottrain_contract.ledger`). Every read also refreshes the summary the run lists show (goodput,
device-hours), cached in the run's row."""

from __future__ import annotations

import time
from typing import Optional

from launcher.registry import LedgerSummary, Registry, RunRecord
from launcher.tables import render_table
from spottrain_contract.ledger import KILLED, PREEMPTED, Ledger, read_ledger
from spottrain_contract.recipe import from_shipped
from spottrain_contract.store import open_store

HEADER = ("ATTEMPT", "STARTED", "WALL", "ENDED AS", "RANKS", "DEVICE", "STEPS", "COMPUTED", "RECOMPUTED",
          "START-UP")


def run_ledger(registry: Registry, record: RunRecord) -> Ledger:
    """The run's ledger from its store, its summary kept in the run's row (a run with no attempt yet: left as
    it was)."""
    endpoint = None
    if record.recipe_document:
        endpoint = from_shipped(record.recipe_document, record.run_id).recipe.train.checkpoint.endpoint_url
    # one retry, not a job's ten: `launch status` answers in seconds when the store is out of reach from here
    ledger = read_ledger(open_store(record.store, endpoint, attempts=2), record.run_id)
    if ledger.attempts:
        registry.cache_ledger(record.run_id, summary(ledger))
    return ledger


def summary(ledger: Ledger) -> LedgerSummary:
    return LedgerSummary(goodput=ledger.goodput, device_hours=ledger.device_hours, device_unit=device_unit(ledger),
                         read=time.time())


def device_unit(ledger: Ledger) -> str:
    """What the ledger's device-hours count: GPUs where any attempt held one, else ranks (a run on CPU)."""
    return "GPU" if any(view.attempt.gpus for view in ledger.attempts) else "rank"


def ledger_text(ledger: Ledger, platform: Optional[str] = None, recoveries: Optional[int] = None) -> str:
    """The attempts as a table, then one line of totals, then what the platform itself counted where it says
    (SkyPilot's job queue: its recoveries); empty when the run has no attempt yet."""
    if not ledger.attempts:
        return ""
    rows = []
    for view in ledger.attempts:
        a = view.attempt
        startup = f"{a.startup_seconds:.1f} s" if a.startup_seconds is not None else "-"
        rows.append((a.number, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.started)),
                     f"{a.wall_seconds:.0f} s", view.cause, a.world_size, a.device, f"{a.start_step}→{a.last_step}",
                     a.computed, view.recomputed, startup))
    hours = f"{device_unit(ledger)}-hours"
    totals = ledger.totals()
    line = (f"{int(totals['attempts'])} attempts, {int(totals['preemptions'])} preempted or killed; goodput "
            f"{ledger.goodput:.1%} ({ledger.useful} useful of {ledger.computed} steps computed, {ledger.recomputed} "
            f"recomputed); {ledger.device_hours:.3g} {hours} used, {ledger.device_hours_lost:.3g} lost")
    text = render_table(HEADER, rows) + "\n" + line
    if platform and recoveries is not None:
        text += "\n" + _platform_line(ledger, platform, recoveries)
    return text


def _platform_line(ledger: Ledger, platform: str, recoveries: int) -> str:
    """The platform's count beside the trainer's: an attempt killed without notice is a preemption when the
    platform recovered the job as often; a difference is named (an attempt that died before its first ledger
    entry, or a recovery still under way, is seen by one side only)."""
    seen = ledger.count(PREEMPTED) + ledger.count(KILLED)
    if recoveries == seen:
        return (f"{platform} recovered the job {recoveries} times, as the ledger counts: the {ledger.count(KILLED)} "
                f"attempts killed without notice were preemptions")
    return (f"{platform} recovered the job {recoveries} times; the ledger saw {seen} attempts preempted or killed "
            f"(an attempt that died before its first entry, or a recovery under way, is seen by one side only)")
