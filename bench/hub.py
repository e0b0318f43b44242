"""The hub over a big run database: the Runs page and `/api/runs` with 10,000 runs (first byte, whole response,
ratio to a bare SQL query of the same rows), and the delay from a metric logged to its point on a run's page.

    .venv/bin/python bench/hub.py [--runs 10000] [--repeat 5] [--metric-runs 5] [--steps 8] [--step-seconds 1]
                                  [--db URL] [--baseline-src DIR] [--targets local,skypilot,vessl]
                                  [--json bench/results/hub.json]

The database is a fresh SQLite file in a scratch project (or `--db postgresql://…`, which must hold no runs), filled
by a bulk insert of the rows `Registry.save` writes (`rundb.store.row_values` of each record; one insert per 500
rows instead of a transaction per run). The runs: five recipes on the targets of `--targets`, started over the
last 180 days, a third of them cells of sweeps; terminal but for the newest local ones (running, their supervisor
alive: this process) and a few drafts. Each carries a shipped recipe of its own (its lr differs), a local run its
progress file and the project's one MLflow store (`runs/local/mlflow.db`, as `launch` points local runs at it),
where the newest `--mlflow-runs` local runs have an MLflow run with a loss curve.

The hub is `launch hub` in its own process (uvicorn on 127.0.0.1, as a user starts it), from this checkout or
`--baseline-src` (another checkout, measured the same way on the same database first). SkyPilot is pointed at a
closed port and HOME at a scratch directory, so no platform is ever reached: their runs' targets are out of reach.

  listing   GET / and GET /api/runs: the first request after the server started (cold), then the median of
            `--repeat`; first byte is when the status line and headers have arrived. Beside them the bare SQL
            SELECT (through SQLAlchemy, in this process) of the same number of newest rows, and the ratio. Then the
            list's event stream (/api/events): until its first `runs` event.
  metric    `--metric-runs` local runs, one after another, each with a simulated trainer that writes its
            progress file every `--step-seconds` (±50%) and commits its queued `train/loss` points to the MLflow
            store every `--flush-seconds` (the trainer's own order: a step's progress is written before its
            metrics are sent; `spottrain.tracking` flushes every second). A client does what the run page does
            (static/hub.js runPage): it follows /api/runs/{id}/events and fetches /api/runs/{id}/metrics whenever a
            `run` event's step changes, on each `metrics` event (new values in MLflow), and once more at `end`. The delay of a point is from its commit to the
            store (and, second, from its step's progress write: the trainer's log call) to the first metrics
            response holding it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

from _harness import PROJECT, kill_tree, median, table

RECIPES = ("baseline", "critic", "verifiable", "rho1", "pairwise_ranking")
TARGET_WEIGHTS = {"local": 5, "skypilot": 3, "vessl": 2}
LIVE_LOCAL = 12  # the newest local runs are running
DRAFTS = 3
LR_PLACEHOLDER = "0.000987654321"  # a template's lr, replaced by each run's own
DAY = 86400.0


# --- the database ---------------------------------------------------------------------------------------------

def shipped_templates(targets: list[str]) -> dict[tuple[str, str], str]:
    """(recipe, target) → the recipe a launch ships, as `launch recipe` resolves it (local: its local profile)."""
    from spottrain_contract.recipe import load_recipe

    return {(name, target): load_recipe(name, project_dir=PROJECT, profile="local" if target == "local" else None,
                                        overrides=[f"train.optim.lr={LR_PLACEHOLDER}"]).shipped()
            for name in RECIPES for target in targets}


def records(project: Path, n: int, targets: list[str], rng: random.Random) -> list:
    """`n` run records, oldest first: what `launch` and the hub would have written over half a year."""
    from launcher.registry import RunRecord
    from spottrain_contract.job import RunState

    templates = shipped_templates(targets)
    local_dir, now = project / "runs" / "local", time.time()
    weights = [TARGET_WEIGHTS[t] for t in targets]
    made, sweep, cells_left = [], None, 0
    for i in range(n):
        started = now - 180 * DAY * (n - i) / n
        recipe, target = rng.choice(RECIPES), rng.choices(targets, weights)[0]
        if cells_left == 0 and rng.random() < 0.06:
            sweep, cells_left = f"sweep-{recipe}-{i:05d}", rng.randint(4, 8)
        lr = f"{rng.uniform(1e-5, 3e-3):.6g}"
        state = rng.choices([RunState.FINISHED, RunState.FAILED, RunState.STOPPED], [7, 2, 1])[0]
        handle: dict = {"local": {"supervisor_pid": 1 + i, "max_restarts_on_errors": 3, "log_offset": 0},
                        "skypilot": {"job_id": i},
                        "vessl": {"vessl_run": i, "organization_name": "org", "project_name": "proj"}}[target]
        if state is RunState.FAILED:
            handle["failure"] = "rank 0: torch.OutOfMemoryError: CUDA out of memory (runs/logs has the rest)"
        here = target == "local"
        made.append(RunRecord(
            run_id=f"{recipe}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started))}-{i:04x}", recipe=recipe,
            target=target, state=state, started=started, ended=started + rng.uniform(600, 3 * DAY),
            store=str(project / "runs" / "store") if here else "s3://weighted-mtp-checkpoints/runs",
            local_dir=str(local_dir) if here else "/workspace/storage/checkpoints/local",
            tracking_uri=f"sqlite:///{local_dir}/mlflow.db" if here else "",
            handle=handle, restarts=rng.choice([0, 0, 0, 1, 2]),
            log=str(project / "runs" / "logs" / f"run-{i}.log") if here else None, project=str(project),
            recipe_document=templates[recipe, target].replace(LR_PLACEHOLDER, lr),
            sweep_id=sweep if cells_left else None, cell=f"lr-{lr}" if cells_left else None))
        cells_left = max(0, cells_left - 1)
    for record in [r for r in made if r.target == "local"][-LIVE_LOCAL:]:
        record.state, record.ended = RunState.RUNNING, None
        record.handle = {**record.handle, "supervisor_pid": os.getpid()}
    for record in made[-DRAFTS:]:
        record.state, record.recipe_document, record.tracking_uri, record.log = RunState.DRAFT, "", "", None
        record.handle = {"hub": {"recipe": record.recipe, "target": record.target, "profile": None,
                                 "overrides": {"train.optim.lr": "2e-3"}, "name": "a draft"}}
    return made


def fill(project: Path, url: str, made: list) -> None:
    """Insert the rows `Registry.save` would write, 500 a statement; progress files of the local runs."""
    from launcher.registry import Registry
    from launcher.rundb.engine import engine_for, transaction
    from launcher.rundb.models import RunRow
    from launcher.rundb.store import insert_ignoring_existing, row_values
    from spottrain_contract.job import progress_path

    engine, key = engine_for(url), Registry(project).project_key
    with transaction(engine) as connection:
        if connection.execute(RunRow.__table__.select().limit(1)).first() is not None:
            raise SystemExit(f"{url} already holds runs: give the bench an empty database")
    with transaction(engine, write=True) as connection:
        for start in range(0, len(made), 500):
            connection.execute(insert_ignoring_existing(connection, RunRow,
                                                        [row_values(r, key) for r in made[start:start + 500]]))
    for record in made:
        if record.target == "local" and record.recipe_document:
            total = 40
            path = progress_path(record.local_dir, record.run_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            step = total if record.state.is_terminal else total // 2
            path.write_text(json.dumps({"step": step, "total": total, "attempt_start": 0}))


def mlflow_runs(made: list, count: int) -> None:
    """MLflow runs, with a short loss curve, for the newest `count` local runs (all in the project's one store)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from spottrain_contract.job import MLFLOW_RUN_ID_TAG

    local = [r for r in made if r.target == "local" and r.recipe_document][-count:]
    if not local:
        return
    client = MlflowClient(local[0].tracking_uri)
    experiment = client.create_experiment("bench")
    for record in local:
        run = client.create_run(experiment, tags={MLFLOW_RUN_ID_TAG: record.run_id})
        stamp = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric("train/loss", 3.0 / step, stamp, step)
                                                   for step in (10, 20, 30, 40)])


# --- the server, and requests to it ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def hub_server(src: Path, project: Path, url: str, home: Path) -> Iterator[tuple[str, int]]:
    """`launch hub` of checkout `src` over the database, on a free port; killed (its process tree) on the way out."""
    port, closed = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VESSL_", "SKYPILOT_", "AWS_"))}
    env.update({"PYTHONPATH": f"{src / 'src'}{os.pathsep}{src}", "HOME": str(home), "LAUNCH_PROJECT_DIR": str(project),
                "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                "SKYPILOT_API_SERVER_ENDPOINT": f"http://127.0.0.1:{closed}"})
    log = open(home / f"hub-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "-c", "from launcher.cli import main; main()", "hub",
                                "--port", str(port), "--db", url], cwd=project, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not start:\n{(home / f'hub-{port}.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        kill_tree(process)
        log.close()


def get(address: tuple[str, int], path: str, timeout: float = 3600) -> dict:
    """One GET on a fresh connection: seconds to the first byte (status line and headers in) and to the end."""
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    first = time.perf_counter() - started
    body = response.read()
    done = time.perf_counter() - started
    connection.close()
    return {"status": response.status, "first_byte_s": first, "total_s": done, "bytes": len(body), "body": body}


def events(address: tuple[str, int], path: str, timeout: float = 3600) -> Iterator[tuple[str, str]]:
    """(event, data) of a server-sent event stream, as they arrive."""
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    connection.request("GET", path, headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    kind, data = "message", []
    try:
        while line := response.readline():
            line = line.decode().rstrip("\n")
            if not line:
                if data:
                    yield kind, "\n".join(data)
                kind, data = "message", []
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
    finally:
        connection.close()


# --- the measurements -----------------------------------------------------------------------------------------

def rows_listed(path: str, body: bytes) -> int:
    """The runs a response lists: the page embeds them as JSON for its script to draw, the API is that list."""
    if path == "/":
        body = re.search(rb'id="initial-runs">(.*?)</script>', body, re.S).group(1)
    return len(json.loads(body))


def bare_sql(url: str, rows: int, repeat: int = 21) -> float:
    """Median seconds of SELECTing the `rows` newest runs, every column, through SQLAlchemy (engine warm)."""
    from sqlalchemy import select

    from launcher.rundb.engine import engine_for, transaction
    from launcher.rundb.models import RunRow

    query = select(RunRow.__table__).order_by(RunRow.started.desc(), RunRow.run_id.desc()).limit(rows)
    engine, times = engine_for(url), []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        with transaction(engine) as connection:
            fetched = connection.execute(query).mappings().all()
        times.append(time.perf_counter() - started)
    assert len(fetched) == rows
    return median(times[1:])


def listing(address, url: str, repeat: int) -> dict:
    figures, sql = {}, {}
    for path in ("/", "/api/runs"):
        cold = get(address, path)
        if cold["status"] != 200:
            figures[path] = {"status": cold["status"], "cold_total_s": cold["total_s"],
                             "error": cold["body"][:300].decode(errors="replace")}
            print(f"  GET {path}: HTTP {cold['status']} after {cold['total_s']:.2f} s", flush=True)
            continue
        warm = [get(address, path) for _ in range(repeat)]
        rows = rows_listed(path, cold["body"])
        if rows not in sql:  # the same rows for both requests: one measurement
            sql[rows] = bare_sql(url, rows)
        figures[path] = {"status": 200, "rows": rows, "bytes": cold["bytes"], "cold_first_byte_s": cold["first_byte_s"],
                         "cold_total_s": cold["total_s"], "first_byte_s": median([w["first_byte_s"] for w in warm]),
                         "total_s": median([w["total_s"] for w in warm]), "bare_sql_s": sql[rows]}
        figures[path]["ratio"] = figures[path]["first_byte_s"] / sql[rows]
        print(f"  GET {path}: {rows} rows, cold {cold['total_s']:.3f} s, warm first byte "
              f"{figures[path]['first_byte_s']:.4f} s, SQL {sql[rows]:.4f} s", flush=True)
    return figures


def first_list_event(address) -> Optional[float]:
    """Seconds until the list stream's first `runs` event; None if it ended without one (the server failed)."""
    started = time.perf_counter()
    for kind, _ in events(address, "/api/events"):
        if kind == "runs":
            return time.perf_counter() - started
    return None


class SimulatedTrainer(threading.Thread):
    """A local run's trainer as the hub sees it: the progress file every `step_seconds` (±50%), the metrics logged
    meanwhile committed to the MLflow store every `flush_seconds` (from a random phase)."""

    def __init__(self, record, steps: int, step_seconds: float, flush_seconds: float):
        super().__init__(daemon=True)
        self.record, self.steps, self.step_seconds, self.flush_seconds = record, steps, step_seconds, flush_seconds
        self.logged: dict[int, float] = {}
        self.committed: dict[int, float] = {}

    def run(self) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        from spottrain_contract.job import MLFLOW_RUN_ID_TAG, progress_path

        client = MlflowClient(self.record.tracking_uri)
        experiment = client.get_experiment_by_name("bench").experiment_id
        mlflow_run = client.create_run(experiment, tags={MLFLOW_RUN_ID_TAG: self.record.run_id}).info.run_id
        progress = progress_path(self.record.local_dir, self.record.run_id)
        progress.parent.mkdir(parents=True, exist_ok=True)
        queued: list[int] = []
        step, next_step = 0, time.monotonic() + self.step_seconds
        next_flush = time.monotonic() + random.uniform(0, self.flush_seconds)
        while step < self.steps or queued:
            due = min(next_step, next_flush) if step < self.steps else next_flush
            time.sleep(max(0.0, due - time.monotonic()))
            if step < self.steps and next_step <= next_flush:
                step += 1
                progress.write_text(json.dumps({"step": step, "total": self.steps, "attempt_start": 0}))
                self.logged[step] = time.monotonic()
                queued.append(step)
                next_step += self.step_seconds * random.uniform(0.5, 1.5)  # steps vary: flushes land anywhere in one
            else:
                stamp = int(time.time() * 1000)
                client.log_batch(mlflow_run, metrics=[Metric("train/loss", 3.0 / s, stamp, s) for s in queued])
                self.committed.update({s: time.monotonic() for s in queued})
                queued = []
                next_flush += self.flush_seconds


def metric_delay(address, project: Path, url: str, steps: int, step_seconds: float,
                 flush_seconds: float) -> tuple[list[float], list[float]]:
    """Follow a live run as its page does while a simulated trainer logs `steps` loss points; each point's delay
    from its commit and from its step's progress write."""
    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import RunState

    registry = Registry(project, url)
    local_dir = project / "runs" / "local"
    record = RunRecord(run_id=f"metric-{time.monotonic_ns():x}", recipe="baseline", target="local",
                       state=RunState.RUNNING, started=time.time(), store=str(project / "runs" / "store"),
                       local_dir=str(local_dir), tracking_uri=f"sqlite:///{local_dir}/mlflow.db",
                       handle={"supervisor_pid": os.getpid()}, project=str(project))
    registry.save(record)
    trainer = SimulatedTrainer(record, steps, step_seconds, flush_seconds)
    seen: dict[int, float] = {}
    lock = threading.Lock()

    def draw_curves() -> None:  # hub.js drawCurves: the run's metric histories
        body = get(address, f"/api/runs/{record.run_id}/metrics")["body"]
        now = time.monotonic()
        with lock:
            for step, _ in json.loads(body).get("train/loss", []):
                seen.setdefault(int(step), now)

    def finish() -> None:  # the supervisor, once the trainer has exited
        trainer.join()
        registry.update(record.run_id, state=RunState.FINISHED, ended=time.time())

    shown = None
    with ThreadPoolExecutor(4) as fetches:
        trainer.start()
        threading.Thread(target=finish, daemon=True).start()
        for kind, data in events(address, f"/api/runs/{record.run_id}/events"):
            if kind == "run":
                view = json.loads(data)
                if view["step"] != shown or RunState(view["state"]).is_terminal:
                    shown = view["step"]
                    fetches.submit(draw_curves)
            elif kind == "metrics":  # new points in MLflow
                fetches.submit(draw_curves)
            elif kind == "end":
                fetches.submit(draw_curves)
                break
    registry.delete(record.run_id)  # the next hub lists the same runs
    missing = sorted(set(trainer.committed) - set(seen))
    if missing:
        raise RuntimeError(f"points never shown on the page: steps {missing}")
    return ([seen[s] - trainer.committed[s] for s in sorted(trainer.committed)],
            [seen[s] - trainer.logged[s] for s in sorted(trainer.committed)])


def metric_delays(address, project: Path, url: str, args) -> dict:
    """`--metric-runs` runs of `--steps` points each: within one run the hub's poll and the trainer's flushes keep
    nearly the same phase, so the runs (each starting at a random phase) are what samples the delay."""
    from_commit, from_log = [], []
    for _ in range(args.metric_runs):
        commit, log = metric_delay(address, project, url, args.steps, args.step_seconds, args.flush_seconds)
        from_commit += commit
        from_log += log
    return {"points": len(from_commit), "step_seconds": args.step_seconds, "flush_seconds": args.flush_seconds,
            "from_commit_s": from_commit, "from_log_s": from_log,
            "from_commit_median_s": median(from_commit), "from_commit_max_s": max(from_commit),
            "from_log_median_s": median(from_log), "from_log_max_s": max(from_log)}


def measure(name: str, src: Path, project: Path, url: str, home: Path, args) -> dict:
    print(f"{name}: the hub of {src}", flush=True)
    with hub_server(src, project, url, home) as address:
        figures = {"src": str(src), "listing": listing(address, url, args.repeat)}
        figures["metric"] = metric_delays(address, project, url, args)
        print(f"  metric → page: median {figures['metric']['from_commit_median_s']:.2f} s, max "
              f"{figures['metric']['from_commit_max_s']:.2f} s", flush=True)
        figures["list_event_s"] = first_list_event(address)
    return figures


def report(results: dict, args) -> None:
    rows = []
    for name, figures in results["hubs"].items():
        for path, f in figures["listing"].items():
            if f["status"] != 200:
                rows.append([name, f"GET {path}", f"HTTP {f['status']}", "-", f"{f['cold_total_s']:.3f}", "-", "-",
                             "-", "-"])
                continue
            rows.append([name, f"GET {path}", f["rows"], f"{f['bytes'] / 1024:.0f} KiB", f"{f['cold_total_s']:.3f}",
                         f"{f['first_byte_s']:.4f}", f"{f['total_s']:.4f}", f"{f['bare_sql_s']:.4f}",
                         f"{f['ratio']:.1f}x"])
        event = figures["list_event_s"]
        rows.append([name, "GET /api/events: first runs event", "-", "-", "-",
                     "failed" if event is None else f"{event:.3f}", "-", "-", "-"])
    print(f"\nhub over {args.runs} runs ({results['database']}), {args.repeat} warm requests each, "
          f"cpus={os.cpu_count()}\n")
    print(table(["hub", "request", "rows", "size", "cold s", "first byte s", "total s", "bare SQL s", "ratio"], rows))
    print()
    rows = [[name, f["metric"]["points"], f"{f['metric']['from_commit_median_s']:.2f}",
             f"{f['metric']['from_commit_max_s']:.2f}", f"{f['metric']['from_log_median_s']:.2f}",
             f"{f['metric']['from_log_max_s']:.2f}"] for name, f in results["hubs"].items()]
    print(table(["hub", "points", "commit→page median s", "max s", "log→page median s", "max s"], rows))
    print(f"\n(steps every {args.step_seconds} s, metrics committed every {args.flush_seconds} s; goal: ≤ 2 s; "
          f"ratio = warm first byte / bare SQL of the same rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="warm requests of each page (median)")
    parser.add_argument("--db", default=None, help="an empty database URL (default: a fresh SQLite file)")
    parser.add_argument("--targets", default="local,skypilot,vessl", help="comma-separated targets of the runs")
    parser.add_argument("--mlflow-runs", type=int, default=500, help="newest local runs with an MLflow run")
    parser.add_argument("--metric-runs", type=int, default=5, help="simulated live runs followed, one after another")
    parser.add_argument("--steps", type=int, default=8, help="loss points each simulated trainer logs")
    parser.add_argument("--step-seconds", type=float, default=1.0)
    parser.add_argument("--flush-seconds", type=float, default=1.0, help="spottrain.tracking's FLUSH_SECONDS")
    parser.add_argument("--baseline-src", type=Path, help="another checkout whose hub to measure first, alike")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=PROJECT / "bench" / "results" / "hub.json",
                        help="where the figures go")
    args = parser.parse_args()
    random.seed(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    try:
        project, home = scratch / "project", scratch / "home"
        shutil.copytree(PROJECT / "recipes", project / "recipes")
        home.mkdir()
        url = args.db or f"sqlite:///{project / 'runs' / 'spottrain.db'}"
        started = time.perf_counter()
        made = records(project, args.runs, args.targets.split(","), random.Random(args.seed))
        fill(project, url, made)
        mlflow_runs(made, args.mlflow_runs)
        print(f"filled {len(made)} runs and {args.mlflow_runs} MLflow runs in {time.perf_counter() - started:.1f} s",
              flush=True)
        hubs = [("baseline", args.baseline_src.resolve())] if args.baseline_src else []
        results = {"runs": args.runs, "targets": args.targets, "database": url.split(":")[0], "cpus": os.cpu_count(),
                   "hubs": {name: measure(name, src, project, url, home, args)
                            for name, src in [*hubs, ("this checkout", PROJECT)]}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(results, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
