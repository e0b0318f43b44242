"""`launch status RUN`'s preemption ledger, and the hub's: each attempt of the run and what preemption cost it,
in steps, device-hours and dollars (`launcher.pricing`), read from the run's store (`spottrain_contract.ledger`), as
a table or as data. Every read also refreshes the summary the run lists show (goodput, device-hours), cached in the
run's row."""

from __future__ import annotations

import time
from typing import Optional

from launcher import pricing
from launcher.registry import LedgerSummary, Registry, RunRecord
from launcher.run_store import read_from_store, run_store
from launcher.views.tables import dollars, render_table
from launcher.views import AttemptRow, CostView, LedgerView
from spottrain_contract.job import RunState
from spottrain_contract.ledger import KILLED, PREEMPTED, Ledger, read_ledger
from spottrain_contract.store import CheckpointStore

HEADER = ("ATTEMPT", "STARTED", "WALL", "ENDED AS", "RANKS", "DEVICE", "STEPS", "COMPUTED", "RECOMPUTED",
          "START-UP")


def run_ledger(registry: Registry, record: RunRecord) -> Ledger:
    """The run's ledger from its store, its summary kept in the run's row."""
    return remembered(registry, record, record_ledger(run_store(record), record))


def record_ledger(store: CheckpointStore, record: RunRecord) -> Ledger:
    """The ledger of the run `record` in `store`: once the run has ended, an attempt it left open was killed (the
    stop came between a kill and the restart), not running."""
    return read_ledger(store, record.run_id, run_ended=record.state.is_terminal)


def stored_ledger(registry: Registry, record: RunRecord) -> Ledger:
    """The run's ledger, its summary kept in the run's row; a store out of reach is one line of error
    (`LaunchError`), as the hub's pages show it."""
    return remembered(registry, record, read_from_store(record, "ledger", lambda store: record_ledger(store, record)))


def remembered(registry: Registry, record: RunRecord, ledger: Ledger) -> Ledger:
    """`ledger`, its summary cached in the run's row first (a run with no attempt yet: the row left as it was)."""
    if ledger.attempts:
        registry.cache_ledger(record.run_id, summary(ledger))
    return ledger


def summary(ledger: Ledger) -> LedgerSummary:
    return LedgerSummary(goodput=ledger.goodput, device_hours=ledger.device_hours, device_unit=device_unit(ledger),
                         read=time.time())


def device_unit(ledger: Ledger) -> str:
    """What the ledger's device-hours count: GPUs where any attempt held one, else ranks (a run on CPU)."""
    return "GPU" if any(view.attempt.gpus for view in ledger.attempts) else "rank"


def ledger_model(ledger: Ledger, cost: Optional[CostView] = None) -> LedgerView:
    """The ledger as data: the hub's Run page draws its table, totals line and cost line from this."""
    rows = [AttemptRow(number=v.attempt.number, started=v.attempt.started, wall_seconds=v.attempt.wall_seconds,
                       ended_as=v.cause, ranks=v.attempt.world_size, device=v.attempt.device, gpus=v.attempt.gpus,
                       start_step=v.attempt.start_step, last_step=v.attempt.last_step, computed=v.attempt.computed,
                       recomputed=v.recomputed, startup_seconds=v.attempt.startup_seconds)
            for v in ledger.attempts]
    return LedgerView(attempts=rows, preemptions=int(ledger.totals()["preemptions"]),
                      goodput=ledger.goodput, useful=ledger.useful, computed=ledger.computed,
                      recomputed=ledger.recomputed, device_hours=ledger.device_hours,
                      device_hours_lost=ledger.device_hours_lost, hours=f"{device_unit(ledger)}-hours",
                      summary=totals_line(ledger) if ledger.attempts else "", cost=cost)


def run_ledger_view(registry: Registry, record: RunRecord) -> LedgerView:
    """The hub's: the run's ledger as data (a draft has none), a store out of reach one line of error."""
    if record.state is RunState.DRAFT:
        return ledger_model(Ledger())
    ledger = stored_ledger(registry, record)
    return ledger_model(ledger, cost_model(record, ledger))


def cost_model(record: RunRecord, ledger: Ledger) -> Optional[CostView]:
    """The run's dollars as data (None: no attempt yet); where no price is known, unknown and why, never $0."""
    if not ledger.attempts:
        return None
    cost = pricing.run_cost(record, ledger)
    if cost is None:
        return CostView(summary=f"unknown: {pricing.unpriced(record)}")
    return CostView(dollars_used=cost.dollars_used, dollars_lost=cost.dollars_lost,
                    dollars_per_step=cost.dollars_per_step, price_per_hour=cost.price.per_node_hour,
                    source=cost.price.source, summary=cost_line(cost))


def cost_line(cost: pricing.RunCost) -> str:
    """`$12.40 used, $1.10 lost to preemption (recipe resources.price_per_hour: $3.20/h a node)`."""
    return (f"{dollars(cost.dollars_used)} used, {dollars(cost.dollars_lost)} lost to preemption "
            f"({cost.price.source}: {dollars(cost.price.per_node_hour)}/h a node)")


def ledger_text(ledger: Ledger, platform: Optional[str] = None, recoveries: Optional[int] = None,
                cost: Optional[CostView] = None) -> str:
    """The attempts as a table, then one line of totals, its `cost` where given, then what the platform itself
    counted where it says (SkyPilot's job queue: its recoveries); empty when the run has no attempt yet."""
    if not ledger.attempts:
        return ""
    rows = []
    for view in ledger.attempts:
        a = view.attempt
        startup = f"{a.startup_seconds:.1f} s" if a.startup_seconds is not None else "-"
        rows.append((a.number, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.started)),
                     f"{a.wall_seconds:.0f} s", view.cause, a.world_size, a.device, f"{a.start_step}→{a.last_step}",
                     a.computed, view.recomputed, startup))
    text = render_table(HEADER, rows) + "\n" + totals_line(ledger) + (f"\ncost: {cost.summary}" if cost else "")
    text += _capacity_line(ledger)
    if platform and recoveries is not None:
        text += "\n" + _platform_line(ledger, platform, recoveries)
    return text


def totals_line(ledger: Ledger) -> str:
    """The ledger in one line, under `launch status RUN`'s table and the Run page's."""
    totals = ledger.totals()
    attempts, stopped = int(totals["attempts"]), int(totals["stopped"])
    return (f"{attempts} attempt{'s' if attempts != 1 else ''}, {f'{stopped} stopped, ' if stopped else ''}"
            f"{int(totals['preemptions'])} preempted or killed; "
            f"goodput {ledger.goodput:.1%} ({ledger.useful} useful of {ledger.computed} steps computed, "
            f"{ledger.recomputed} recomputed); {ledger.device_hours:.3g} {device_unit(ledger)}-hours used, "
            f"{ledger.device_hours_lost:.3g} lost")


def _capacity_line(ledger: Ledger) -> str:
    """`\ncapacity: 4 ranks (NVIDIA A100) from attempt 1, 2 ranks (NVIDIA A100) from attempt 3` where the run
    resumed on other capacity (elastic resume); empty where every attempt had the same."""
    shapes, shown = [], None
    for view in ledger.attempts:
        shape = f"{view.attempt.world_size} ranks ({view.attempt.device})"
        if shape != shown:
            shapes.append(f"{shape} from attempt {view.attempt.number}")
            shown = shape
    return "\ncapacity: " + ", ".join(shapes) if len(shapes) > 1 else ""


def _platform_line(ledger: Ledger, platform: str, recoveries: int) -> str:
    """The platform's count beside the trainer's: an attempt killed without notice is a preemption when the
    platform recovered the job as often; a difference is named (an attempt that died before its first ledger
    entry, or a recovery still under way, is seen by one side only)."""
    seen = ledger.count(PREEMPTED) + ledger.count(KILLED)
    if recoveries == seen:
        killed = ledger.count(KILLED)
        return (f"{platform} recovered the job {recoveries} times, as the ledger counts: the {killed} "
                f"attempt{'s' if killed != 1 else ''} killed without notice {'were' if killed != 1 else 'was a'} "
                f"preemption{'s' if killed != 1 else ''}")
    return (f"{platform} recovered the job {recoveries} times; the ledger saw {seen} attempts preempted or killed "
            f"(an attempt that died before its first entry, or a recovery under way, is seen by one side only)")
