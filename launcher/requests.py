"""What a user asks of the operations, as data: a face builds one request from its flags or its JSON, once, and
the operations pass it down unchanged (frozen). A launch request says what to launch; the plan, the rendered
document and the submission are separate steps over it (`launcher.operations.launching`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Optional, Union

from spottrain_contract.sweep import Cell


class DependencyLookup(Enum):
    """What a plan does about a stage it depends on (the verifiable stage's critic checkpoint)."""

    SKIP = "skip"  # render the recipe as written (`launch check`)
    DESCRIBE = "describe"  # a dry run: fill it in where the store is here, else say it is looked up at launch
    REQUIRE = "require"  # a launch: found, or a one-line error saying which run produces it


DEFAULT_TARGET = "skypilot"  # where a new run goes unless asked otherwise


@dataclass(frozen=True)
class LaunchRequest:
    """One launch (or resume, or sweep) of a recipe, as asked: nothing resolved yet."""

    recipe: str
    target: Optional[str] = None  # None: a resume's recorded target, else DEFAULT_TARGET (`resolved_target`)
    profile: Optional[str] = None  # None (or ""): a resume's recorded profile, else the target's default
    overrides: tuple[str, ...] = ()  # dotted `key=value`, as typed
    gpus: Optional[int] = None  # `--gpus`: becomes the override resources.gpus
    nodes: Optional[int] = None
    run_id: Optional[str] = None  # continue this run (a resume); None: a new run id
    chaos: Optional[str] = None  # a run here: kill it at random moments (launcher.targets.local.supervisor.Chaos)
    allow_changes: bool = False  # a resume may change the settings the run was launched with
    sweep_id: Optional[str] = None  # a sweep recipe: its id; a cell: the sweep it belongs to
    cell: Union[str, Cell, None] = None  # one cell of the recipe's sweep: a grid cell's name, or a trial drawn
    max_parallel: Optional[int] = None  # a sweep on a platform: at most this many cells live
    after: tuple[tuple[str, str], ...] = ()  # a pipeline stage: (recipe, run id) of the stages launched before it

    @property
    def asks_for_settings(self) -> bool:
        """Whether it asks for training settings of its own (a resume without them continues as launched; GPUs
        and nodes are capacity, which a resume may change)."""
        return bool(self.overrides or self.profile)

    def sized(self) -> tuple[str, ...]:
        """`--gpus`/`--nodes` as overrides before the others, so the shipped recipe records them like any."""
        return ((*((f"resources.gpus={self.gpus}",) if self.gpus is not None else ()),
                 *((f"resources.nodes={self.nodes}",) if self.nodes is not None else ()), *self.overrides))

    def but(self, **changes) -> "LaunchRequest":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DraftRequest:
    """A run kept as a draft (the hub's Save), or launched from one: the recipe, where, and its settings as
    `{dotted key: value}` (strings are typed as YAML types them, as on the command line)."""

    recipe: str
    target: str = "local"
    profile: Optional[str] = None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    name: Optional[str] = None  # what the Runs page calls it (default: the recipe's `name`)


class JobKind(Enum):
    """A job that uses a run's trained weights instead of training."""

    EVAL = "eval"
    PREDICT = "predict"


@dataclass(frozen=True)
class WeightsJobRequest:
    """`launch eval RUN` / `launch predict RUN INPUT...`: a one-GPU job on the run's weights."""

    kind: JobKind
    run_id: str
    checkpoint: str = "best"  # best, last, or a step
    target: Optional[str] = None  # default: where the run trained
    options: tuple[tuple[str, Any], ...] = ()  # the task's declared job options (`--option key=value`)
    overrides: tuple[str, ...] = ()  # any other setting of the run's recipe
    inputs: tuple[str, ...] = ()  # predict: what to judge
    out: Optional[str] = None  # predict: where the answer goes (on the machine that runs it)


@dataclass(frozen=True)
class AdapterEvalRequest:
    """`launch eval --lora-path DIR`: judge an adapter trained anywhere with a recipe's data and options."""

    adapter: str
    recipe: str
    target: str = "local"
    output_dir: str = "eval_results"
    options: tuple[tuple[str, Any], ...] = ()
    overrides: tuple[str, ...] = ()
