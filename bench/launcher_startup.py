"""Wall time of `launch --help` and `launch check` next to `sky --help`, measured in the same run.

    .venv/bin/python bench/launcher_startup.py [--repeat 5]

Each command runs as a fresh process (what a user or CI pays), HOME pointed at a scratch directory so
SkyPilot's first-run setup is not counted against either side after the warm-up run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def wall_times(command: list[str], repeat: int, env: dict) -> list[float]:
    subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, check=True)  # warm-up (and ~/.sky)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-home-")
    env = {**os.environ, "HOME": home, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    commands = {
        "launch --help": [str(BIN / "launch"), "--help"],
        "launch check": [str(BIN / "launch"), "check"],
        "sky --help": [str(BIN / "sky"), "--help"],
    }
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.repeat} runs each, cpus={os.cpu_count()})")
    try:
        for name, command in commands.items():
            times = wall_times(command, args.repeat, env)
            print(f"{name:<16} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
