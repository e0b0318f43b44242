"""`python -m spottrain train` under torchrun: trains the recipe the launch shipped in $SPOTTRAIN_RECIPE.
`python -m spottrain eval --run-id RUN` and `predict --run-id RUN INPUT...` use a run's trained weights (`offline`);
`eval --adapter DIR` judges an adapter trained anywhere on the recipe's base model and test data.

Without a launcher (a node set up by hand), `--recipe recipes/NAME.yaml [--profile P] [--override k=v ...]`
resolves a recipe file here instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from spottrain_contract.errors import UserError
from spottrain.preemption import record_failure, report_exit_code
from spottrain_contract.job import DO_NOT_RESTART_EXIT_CODE, RECIPE_ENV
from spottrain_contract.recipe import from_shipped, load_recipe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spottrain")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or resume) the run named by $SPOTTRAIN_RUN_ID")
    evaluate = commands.add_parser("eval", help="a run's test metrics, from one of its checkpoints")
    predict = commands.add_parser("predict", help="a run's predictions for INPUTS, from one of its checkpoints")
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    wrapped = commands.add_parser("command", help="a command recipe's script, spot-safe: `command -- torchrun … "
                                                  "train.py --config {config}` (the run script renders it)")
    wrapped.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- LAUNCHER ARGS")
    predict.add_argument("--out", type=Path, default=None, help="write the results here (default: stdout)")
    for command in (train, evaluate, predict, wrapped):
        command.add_argument("--recipe", default=None,
                             help=f"recipe file (default: the recipe shipped in ${RECIPE_ENV})")
        command.add_argument("--profile", default=None)
        command.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    predict.add_argument("--run-id", dest="run", required=True, help="the training run whose weights are used")
    weights = evaluate.add_mutually_exclusive_group(required=True)
    weights.add_argument("--run-id", dest="run", help="the training run whose weights are used")
    weights.add_argument("--adapter", help="an adapter directory (peft) trained anywhere, on the recipe's base model")
    evaluate.add_argument("--output-dir", type=Path, default=Path("eval_results"),
                          help="with --adapter: where predictions and metrics are written")
    for command in (evaluate, predict):
        command.add_argument("--checkpoint", default="best", help="best, last, or a step (default: best)")
    args = parser.parse_args(argv)
    try:
        if args.recipe:
            loaded = load_recipe(args.recipe, project_dir=Path.cwd(), profile=args.profile, overrides=args.override)
        elif os.environ.get(RECIPE_ENV):
            loaded = from_shipped(os.environ[RECIPE_ENV], f"${RECIPE_ENV}")
        else:
            raise UserError("no recipe: launch it with `launch recipe NAME`, or pass --recipe recipes/NAME.yaml")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        report_exit_code(DO_NOT_RESTART_EXIT_CODE)  # a recipe that does not validate never will
        return DO_NOT_RESTART_EXIT_CODE
    if args.command == "train":
        from spottrain.trainer import train as run_training

        return run_training(loaded)
    if args.command == "command":
        from spottrain.command.wrapper import run_command

        return run_command(loaded, args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
    return _use_weights(args, loaded)


def _use_weights(args, loaded) -> int:
    """eval / predict: one process; a bad input or setting is one line and the do-not-restart code. Either way a
    failure leaves its line in the failure file, as the trainer's does: the run's one-line failure is its error."""
    from spottrain import offline

    try:
        if args.command == "eval" and args.adapter:
            offline.evaluate_adapter(loaded, args.adapter, args.output_dir)
        elif args.command == "eval":
            offline.evaluate(loaded, args.run, args.checkpoint)
        else:
            offline.predict(loaded, args.run, args.checkpoint, args.inputs, args.out)
    except Exception as exc:
        known = isinstance(exc, UserError)
        record_failure(loaded.recipe.train.checkpoint.local_dir, str(exc) if known else f"{type(exc).__name__}: {exc}")
        if not known:
            raise  # a bug or a crash: its traceback
        print(f"error: {exc}", file=sys.stderr)
        report_exit_code(DO_NOT_RESTART_EXIT_CODE)
        return DO_NOT_RESTART_EXIT_CODE
    report_exit_code(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
