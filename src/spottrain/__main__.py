"""`python -m spottrain train --recipe recipes/NAME.yaml [--profile P] [--override k=v ...]` under torchrun."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.errors import LaunchError
from launcher.recipes import load_recipe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spottrain")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or resume) the run named by $SPOTTRAIN_RUN_ID")
    train.add_argument("--recipe", required=True, help="recipe file, e.g. recipes/baseline.yaml")
    train.add_argument("--profile", default=None)
    train.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        loaded = load_recipe(args.recipe, project_dir=Path.cwd(), profile=args.profile, overrides=args.override)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from spottrain.trainer import train as run_training

    return run_training(loaded)


if __name__ == "__main__":
    sys.exit(main())
