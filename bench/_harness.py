"""Shared by the trainer benchmarks: run the real trainer under torchrun, kill it, read its MLflow metrics, and
serve S3 from moto's real HTTP server.

Every trainer attempt starts in a session of its own; torchrun starts its workers in sessions of their own too,
so killing an attempt signals the processes it started, found by walking its process tree (never by name).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import psutil

T = TypeVar("T")
PROJECT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/baseline.yaml"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

_UNSET = ("MLFLOW_TRACKING_URI", "SPOTTRAIN_S3_FAULTS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
          "AWS_SESSION_TOKEN")


def _unwind_on_sigterm(signum, frame) -> None:
    """`timeout` (or a scheduler) ending a benchmark unwinds it like Ctrl-C, so the attempt it is running is
    killed on the way out: its processes live in sessions of their own and would otherwise train on, slowing every
    later measurement on the machine."""
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _unwind_on_sigterm)


@dataclass
class S3:
    endpoint: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                            region_name=AWS_ENV["AWS_DEFAULT_REGION"])


@contextlib.contextmanager
def moto_s3(bucket: str = "bench") -> Iterator[S3]:
    """moto's HTTP server on 127.0.0.1 (a free port) in a thread of this process, with one bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3(f"http://{host}:{port}", bucket)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


@dataclass
class TrainerRun:
    """One training run (SPOTTRAIN_RUN_ID) of the baseline recipe's local profile; `store` is a directory or
    s3://bucket/prefix. MLflow goes to `mlflow_db` (default <local_dir>/mlflow.db), which attempts with
    different local dirs can share."""
    run_id: str
    root: Path
    store: str
    local_dir: Path
    overrides: list[str] = field(default_factory=list)
    nproc: int = 2
    s3: Optional[S3] = None
    mlflow_db: Optional[Path] = None

    def command(self) -> list[str]:
        overrides = [f"train.checkpoint.uri={self.store}", f"train.checkpoint.local_dir={self.local_dir}",
                     *([f"train.checkpoint.endpoint_url={self.s3.endpoint}"] if self.s3 else []), *self.overrides]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                "-m", "spottrain", "train", "--recipe", RECIPE, "--profile", "local",
                *[arg for o in overrides for arg in ("--override", o)]]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _UNSET}
        no_config = str(self.root / "no-aws-config")  # never read the user's ~/.aws
        env.update({"SPOTTRAIN_RUN_ID": self.run_id, "CUDA_VISIBLE_DEVICES": "", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
                    "MLFLOW_TRACKING_URI": f"sqlite:///{self.tracking_db}",
                    "AWS_CONFIG_FILE": no_config, "AWS_SHARED_CREDENTIALS_FILE": no_config, **AWS_ENV})
        return env

    @property
    def tracking_db(self) -> Path:
        return (self.mlflow_db or self.local_dir / "mlflow.db").resolve()

    def start(self) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.root / f"{self.run_id}-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            return subprocess.Popen(self.command(), cwd=PROJECT, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, timeout: float = 600) -> None:
        """Run to completion (once the machine is idle); raise with the log's tail if it fails."""
        wait_until_idle()
        with foreign_cpu() as load:
            process = self.start()
            try:
                code = process.wait(timeout=timeout)
            finally:
                kill_tree(process)
        self.foreign_cores = load["cores"]
        if code != 0:
            raise RuntimeError(f"trainer exited {code}:\n{self.log.read_text()[-3000:]}")

    def run_until(self, condition: Callable[[], bool], timeout: float = 600, poll: float = 0.05) -> None:
        """Start (once the machine is idle), poll `condition`, then SIGKILL every process of the attempt at once
        (a spot VM vanishing)."""
        wait_until_idle()
        with foreign_cpu() as load:
            process = self.start()
            try:
                deadline = time.monotonic() + timeout
                while not condition():
                    if process.poll() is not None:
                        raise RuntimeError(f"trainer exited {process.returncode} before the condition held:\n"
                                           f"{self.log.read_text()[-3000:]}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"condition never held:\n{self.log.read_text()[-3000:]}")
                    time.sleep(poll)
            finally:
                load["descendants"] = kill_tree(process)
        self.foreign_cores = load["cores"]

    def metric(self, key: str) -> dict[int, float]:
        """step → value of one metric of this run."""
        return {step: value for step, value, _ in self.metric_points(key)}

    def metric_points(self, key: str) -> list[tuple[int, float, int]]:
        """(step, value, timestamp ms) of one metric, by step."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{self.tracking_db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`spottrain.run_id` = '{self.run_id}'")
        if len(runs) != 1:
            raise RuntimeError(f"expected one MLflow run tagged {self.run_id} in {self.tracking_db}, found {len(runs)}")
        history = client.get_metric_history(runs[0].info.run_id, key)
        return sorted((m.step, m.value, m.timestamp) for m in history)

    # --- the store --------------------------------------------------------------------------------------------

    @functools.cached_property
    def checkpoint_store(self):
        """The run's checkpoint store, opened in this process with spottrain's own store classes."""
        from spottrain_contract.store import open_store

        os.environ.update(AWS_ENV)
        return open_store(self.store, self.s3.endpoint if self.s3 else None)

    def manifest(self, step: int) -> Optional[dict]:
        data = self.checkpoint_store.get_bytes(f"{self.run_id}/step-{step:08d}/MANIFEST.json")
        return json.loads(data) if data else None


def kill_tree(process: subprocess.Popen) -> float:
    """SIGKILL the attempt: its process and every descendant (torchrun's workers live in their own sessions).
    Returns the CPU seconds the descendants had used (killed, they are never reaped into our rusage)."""
    try:
        root = psutil.Process(process.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    cpu = 0.0
    for proc in procs[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)
    process.wait()
    return cpu


# --- a shared machine ------------------------------------------------------------------------------------------

def wait_until_idle(busy_below: float = 25.0, max_wait: float = 120.0) -> float:
    """Wait (at most `max_wait` s) until the CPUs are less than `busy_below` % busy; returns the last reading."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < busy_below or time.monotonic() > deadline:
            return busy


@contextlib.contextmanager
def foreign_cpu() -> Iterator[dict]:
    """Average number of cores used by processes other than this one and its (waited-for) descendants while
    in the block: other people's work on a shared machine, the noise in every timing here."""
    def busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def ours() -> float:
        me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    result: dict = {}
    busy0, ours0, started = busy(), ours(), time.monotonic()
    yield result
    ours_used = ours() - ours0 + result.get("descendants", 0.0)
    result["cores"] = max(0.0, busy() - busy0 - ours_used) / (time.monotonic() - started)


def add_run_options(parser) -> None:
    """The options every trainer benchmark takes: its ranks, and how quiet the machine must be while it runs."""
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun --nproc_per_node)")
    parser.add_argument("--max-other-cores", type=float, default=0.25,
                        help="measure a run again when other processes used more cores than this meanwhile")


def until_quiet(measure: Callable[[int], T], max_other_cores: float, tries: int = 3) -> T:
    """measure(0), measure(1), ... until one ran while other processes used at most `max_other_cores` cores on
    average (its result's `foreign_cores`); after `tries` the last one is kept anyway."""
    for attempt in range(tries):
        result = measure(attempt)
        if result.foreign_cores <= max_other_cores or attempt == tries - 1:
            return result
        print(f"  (other processes used {result.foreign_cores:.2f} cores: measuring again)", flush=True)
    raise AssertionError("unreachable")


# --- statistics and tables -------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100])."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(header: list[str], rows: list[list]) -> str:
    cells = [header, *[[f"{c:.4f}" if isinstance(c, float) else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
