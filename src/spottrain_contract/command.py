"""A command recipe: a team's own training script, launched like a stage (`task: command`).

The recipe names what torchrun (or plain `python`) starts in the code directory (`command`), the script's own
configuration as the script reads it (`config`, written to a file on the node whose path replaces `{config}`),
and where spottrain keeps the run's checkpoints (`train.checkpoint`). Resources, volumes, env, secrets, profiles
and sweeps are those of every recipe. The script owns its batch, optimizer and loop; spottrain owns what
survives a preemption (`spottrain_contract.script` is the node contract the script sees).

`config` is checked against a JSON Schema: the recipe's `config_schema` (a file next to the recipe), or, without
one, the schema its own values imply (every key known, every value keeping its type), so an override of
`config.training.lr` is typed and a misspelt key is one line naming the keys there are.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, model_validator

from spottrain_contract.schema import Checkpoint, FieldProblem, Recipe, Strict

CONFIG_PLACEHOLDER = "{config}"
COMMAND_WRAPPER = "command"  # `python -m spottrain command -- <launcher> <argv>`: the node wrapper around the script
_CONFIG_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.(ya?ml|json)$")


class CommandCheckpoint(Checkpoint):
    """Where the script's checkpoints are kept. The script decides when it saves (no cadence here); every
    checkpoint it completes is synced to `uri`, the newest `keep` plus the best and the final kept."""

    every_steps: Optional[int] = Field(None, description="Unused: the script decides when it saves.")
    best_metric: Optional[str] = Field(None, description="Metric (as the script reports it with a checkpoint) "
                                                         "that picks the best checkpoint; unset: none is best.")

    @model_validator(mode="after")
    def _one_unit(self):  # no cadence to check: the script saves when it will
        return self


class CommandTrain(Strict):
    """What spottrain keeps of a command run; the training itself is the script's (`config`)."""

    checkpoint: CommandCheckpoint = Field(description="The durable store of the script's checkpoints and how "
                                                      "many are kept.")

    @property
    def epochs(self) -> None:
        """The script's own (in `config`): unknown to spottrain, as is `max_steps`."""
        return None

    @property
    def max_steps(self) -> None:
        return None


class CommandRecipe(Recipe):
    """A recipe whose `task` is `command`: any script, spot-safe."""

    command: Union[str, list[str]] = Field(
        description="What runs in the code directory, after torchrun's own flags: `train.py --config {config}` "
                    "(a string split like a shell would, or a list); {config} is replaced by the written config "
                    "file's path.")
    launcher: Literal["torchrun", "python"] = Field(
        "torchrun", description="torchrun (one process per GPU, flags from resources) or python (one process "
                                "per node, for a script that starts its own workers).")
    config: dict[str, Any] = Field(default_factory=dict, description="The script's own configuration, nested as "
                                                                     "the script reads it.")
    config_schema: Optional[str] = Field(
        None, description="A JSON Schema file next to the recipe that validates `config` and describes its fields "
                          "(the hub's form); unset: the types of the written values are the schema.")
    config_file: str = Field("config.yaml", description="The name of the config file on the node: YAML, or JSON "
                                                        "when it ends in .json.")
    train: CommandTrain = Field(description="Where the script's checkpoints are kept.")

    @model_validator(mode="after")
    def _every_capacity_keeps_the_global_batch(self):
        """The script owns its batch: any capacity the recipe lists is the script's to adapt to."""
        return self

    @model_validator(mode="after")
    def _command_and_file(self):
        if not self.argv:
            raise FieldProblem("command", "expected the script to run, e.g. train.py --config {config}")
        if not _CONFIG_FILE.match(self.config_file):
            raise FieldProblem("config_file", f"expected a file name ending in .yaml, .yml or .json, got "
                                              f"{self.config_file!r}")
        return self

    @property
    def argv(self) -> list[str]:
        """The command as arguments (the `{config}` placeholder still in them)."""
        return shlex.split(self.command) if isinstance(self.command, str) else [str(a) for a in self.command]

    @property
    def effective_batch(self) -> None:
        """Unknown to spottrain: the script's."""
        return None

    def grad_accum_on(self, gpus: int, nodes: Optional[int] = None) -> None:
        return None


def config_text(recipe: CommandRecipe) -> str:
    """The config file's content as the script reads it: JSON for a `.json` name, else YAML."""
    if recipe.config_file.endswith(".json"):
        return json.dumps(recipe.config, indent=1, sort_keys=False) + "\n"
    import yaml

    return yaml.safe_dump(recipe.config, sort_keys=False, allow_unicode=True, width=10**6)


def implied_schema(value: Any) -> dict:
    """The JSON Schema the written values imply: every mapping closed to other keys, every value its type (a whole
    number also accepts a number where it was written as a float). Lists keep being lists of anything."""
    if isinstance(value, dict):
        return {"type": "object", "additionalProperties": False,
                "properties": {key: implied_schema(child) for key, child in value.items()}}
    if isinstance(value, bool):
        return {"type": "boolean", "default": value}
    if isinstance(value, int):
        return {"type": "integer", "default": value}
    if isinstance(value, float):
        return {"type": "number", "default": value}
    if isinstance(value, str):
        return {"type": "string", "default": value}
    if isinstance(value, list):
        return {"type": "array", "default": value}
    return {}


def config_schema(recipe: CommandRecipe, recipe_file: Path, written: Any = None) -> dict:
    """The schema `config` is checked against: the recipe's file (next to `recipe_file`), else the one implied by
    `written` (the config as the recipe files and profile wrote it, before a sweep's cell and the overrides)."""
    if recipe.config_schema is None:
        return implied_schema(written if isinstance(written, dict) else recipe.config)
    path = recipe_file.parent / recipe.config_schema
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FieldProblem("config_schema", f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise FieldProblem("config_schema", f"{path} is not JSON: {exc}") from None


def config_problems(config: dict, schema: dict) -> list[tuple[str, str]]:
    """(dotted key under `config`, what was expected) for each place `config` breaks `schema`, most specific
    first; an unknown key names the keys the schema knows there."""
    from jsonschema import Draft202012Validator

    problems = []
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: (list(e.absolute_path), e.message))
    for error in errors:
        key = ".".join(["config", *map(str, error.absolute_path)])
        if error.validator == "additionalProperties":
            known = sorted((error.schema.get("properties") or {}))
            for extra in sorted(set(error.instance) - set(known)):
                problems.append((f"{key}.{extra}", "unknown key" + (f" (expected one of: {', '.join(known)})"
                                                                    if known else "")))
            continue
        if error.validator == "required":
            missing = re.match(r"'([^']+)'", error.message)
            problems.append((f"{key}.{missing.group(1)}" if missing else key, "required key is missing"))
            continue
        problems.append((key, _expected(error)))
    return list(dict.fromkeys(problems))


_JSON_TYPES = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
               "object": "a mapping", "array": "a list", "null": "null"}


def _expected(error) -> str:
    got = error.instance
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"expected {' or '.join(_JSON_TYPES.get(w, w) for w in wanted)}, got {got!r}"
    if error.validator == "enum":
        return f"expected one of {', '.join(map(str, error.validator_value))}, got {got!r}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
        return f"expected {relation[error.validator]} {error.validator_value}, got {got!r}"
    return f"{error.message}"
