"""Start-to-first-step of a resumed attempt (restored from the store onto an empty disk) vs. a fresh start.

    .venv/bin/python bench/resume_start.py [--steps 20] [--repeats 3] [--stores local,s3] [--nproc 2]

For each store (a local directory, or s3://bench/<prefix> on moto's HTTP server in this process) and repeat:
  1. fresh    a new run (max_steps=--steps, checkpoint at --steps/2 only); once <run>/step-N/MANIFEST.json is
              in the store, every process of the attempt is SIGKILLed (a spot VM vanishing)
  2. resumed  the same run id and store with an EMPTY checkpoint.local_dir: it lists the store, downloads
              the checkpoint (weights, optimizer shards, RNG, trainer state), loads it and trains to the end
Both attempts log to one MLflow database, created before the fresh attempt (as a tracking server would be).
`perf/start_to_first_step_seconds` (trainer process start to the end of its first step) is read at step 1
(fresh) and step N+1 (resumed). The download volume is the sum of the manifest's file sizes; the download
time is measured separately, by fetching those files sequentially with spottrain's store classes in this
process (the trainer's ranks each fetch their own files). Runs wait for an idle machine; a pair is repeated
(up to 3 times) when other processes used more than --max-other-cores cores on average meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from _harness import TrainerRun, add_run_options, median, moto_s3, table, until_quiet


def measure_pair(name: str, root: Path, store: str, s3, steps: int, nproc: int) -> SimpleNamespace:
    from mlflow.tracking import MlflowClient

    half = steps // 2
    root.mkdir(parents=True)
    MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()  # tables exist for both, as on a server
    overrides = [f"train.max_steps={steps}", "train.epochs=1000", "train.log_every_steps=1",
                 f"train.checkpoint.every_steps={half}", f"train.eval.every_steps={steps + 1000}"]
    common = dict(run_id=name, root=root, store=store, s3=s3, overrides=overrides, nproc=nproc,
                  mlflow_db=root / "mlflow.db")
    fresh = TrainerRun(local_dir=root / "local-fresh", **common)
    fresh.run_until(lambda: fresh.manifest(half) is not None)
    manifest = fresh.manifest(half)

    download = root / "download"
    started = time.perf_counter()
    for entry in manifest["files"]:
        fresh.checkpoint_store.get_file(f"{name}/step-{half:08d}/{entry['path']}", download / entry["path"])
    download_seconds = time.perf_counter() - started
    shutil.rmtree(download)

    resumed = TrainerRun(local_dir=root / "local-resumed", **common)
    resumed.run()
    first = resumed.metric("perf/start_to_first_step_seconds")
    return SimpleNamespace(fresh=first[1], resumed=first[half + 1], files=len(manifest["files"]),
                           bytes=sum(e["size"] for e in manifest["files"]), download=download_seconds,
                           foreign_cores=max(fresh.foreign_cores, resumed.foreign_cores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="train.max_steps; the checkpoint is at steps/2")
    parser.add_argument("--repeats", type=int, default=3, help="fresh/resumed pairs per store")
    parser.add_argument("--stores", default="local,s3", help="comma-separated: local, s3")
    add_run_options(parser)
    args = parser.parse_args()
    stores = args.stores.split(",")
    root = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    results: dict[str, list[SimpleNamespace]] = {kind: [] for kind in stores}
    try:
        with moto_s3() if "s3" in stores else contextlib.nullcontext() as s3:
            for i in range(args.repeats):
                for kind in stores:
                    def measure(attempt: int) -> SimpleNamespace:
                        name = f"resume-{kind}-{i}-{attempt}"
                        store = f"s3://{s3.bucket}/{name}" if kind == "s3" else str(root / name / "store")
                        return measure_pair(name, root / name, store, s3 if kind == "s3" else None,
                                            args.steps, args.nproc)

                    pair = until_quiet(measure, args.max_other_cores)
                    results[kind].append(pair)
                    print(f"  {kind} #{i}: fresh {pair.fresh:.2f} s, resumed {pair.resumed:.2f} s, download "
                          f"{pair.download:.3f} s (other processes used {pair.foreign_cores:.2f} cores)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nresume start: {args.repeats} fresh/resumed pair(s) per store, checkpoint at step {args.steps // 2}, "
          f"{args.nproc} ranks, cpus={os.cpu_count()}\n")
    rows = []
    for kind, pairs in results.items():
        fresh, resumed = median([p.fresh for p in pairs]), median([p.resumed for p in pairs])
        download = median([p.download for p in pairs])
        rows.append([kind, f"{fresh:.2f}", f"{resumed:.2f}", f"{resumed / fresh:.2f}x",
                     f"{pairs[0].files} / {pairs[0].bytes / 2**20:.2f} MiB", f"{download:.3f}",
                     f"{(resumed - download) / fresh:.2f}x"])
    print(table(["store", "fresh s", "resumed s", "resumed/fresh", "download files / size", "download s",
                 "(resumed - download)/fresh"], rows))
    print("\n(medians over pairs; goal: resumed <= 1.2x fresh + download time)")


if __name__ == "__main__":
    main()
