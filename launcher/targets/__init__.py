"""Where a run goes: one module per target, behind one interface, looked up by name from one table.

Split like torchx's `submit = dryrun + schedule`: `render` is pure (the plan in, the exact document the platform
receives out; `--dry-run` prints it with secrets masked) and `launch` submits an already validated document.
The runner (`launcher.runner`) creates the run record and keeps the registry; a target only talks to its
platform. Adding a target is one module and one line in `TARGETS` (or an entry point in the `spottrain.targets`
group, from another package). Modules load lazily, so `launch --help` pays for none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Protocol

from pydantic import BaseModel, ConfigDict

from launcher.errors import LaunchError
from spottrain_contract.errors import UserError
from spottrain_contract.job import RunState
from spottrain_contract.plugins import PluginTable
from spottrain_contract.schema import Recipe


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    step: Optional[int] = None  # the trainer's last finished step, where the target can see its progress
    total: Optional[int] = None  # the steps the run trains in all
    restarts: Optional[int] = None  # recoveries the platform counted, where it says
    handle: Optional[dict] = None  # entries for the record's handle the platform told (where it placed the job)

    @property
    def progress(self) -> str:
        """`12/40` for people, `-` where the step is not known."""
        return progress_text(self.step, self.total)


def progress_text(step: Optional[int], total: Optional[int]) -> str:
    return "-" if step is None else f"{step}/{total}"


class Handle(BaseModel):
    """What a target keeps in a run's record to find its run again, typed: each target declares its own
    (`HANDLE`), reads a record's through `of` and writes only its fields. The record keeps the entries of every
    writer (the target at launch, a supervisor here, the hub's draft entry) as one JSON object, so a model reads
    its own fields and ignores the others'."""

    model_config = ConfigDict(extra="ignore")

    failure: Optional[str] = None  # why a failed run failed, one line (the first failing rank's error)

    @classmethod
    def of(cls, record) -> "Handle":
        return cls.model_validate(record.handle)

    def entries(self) -> dict:
        """The fields set, to merge into the record's handle (`Registry.update(handle=...)`)."""
        return self.model_dump(exclude_unset=True)

    def where(self) -> Optional[str]:
        """Where a person finds the run on its platform (a URL, a job id), if anywhere."""
        return None


@dataclass(frozen=True)
class Check:
    """One row of `launch doctor`: a name, whether it passed, and what was found (on failure, how to fix it)."""

    name: str
    ok: bool
    detail: str


class Target(Protocol):
    """What each target module provides (module attributes and functions)."""

    RUNS_HERE: bool  # on this machine: secrets optional, followed in the foreground, paths under the project
    HANDLE: type[Handle]  # what its runs' records keep to find them again
    DEFAULT_PROFILE: Optional[str]  # the recipe profile a launch on this target applies unless told otherwise

    def unsupported(self, recipe: Recipe) -> Optional[str]:
        """Why this recipe cannot run on this target (`file: key: reason`), or None."""

    def describe(self, recipe: Recipe) -> str:
        """The summary's target line: what the run gets (`4× A100-80GB × 1 node, spot, …`)."""

    def secret_names(self, recipe: Recipe) -> list[str]:
        """The secrets whose values this target passes at launch."""

    def preflight(self, recipe: Recipe, project_dir) -> list:
        """`launch doctor`'s checks of this platform (Check rows): signed in, able to provision."""

    def render(self, plan, secrets) -> str:
        """Pure: the exact document the platform receives (masked secrets for display, real ones to launch)."""

    def validate(self, document: str) -> None:
        """The platform's own schema plus the checks it lacks; raises LaunchError."""

    def launch(self, plan, document: str, secrets, record) -> Handle:
        """Submit the validated document; returns the handle the record keeps to find the run again."""

    def status(self, record) -> RunStatus: ...
    def logs(self, record, follow: bool) -> Iterator[str]: ...

    def stop(self, record) -> RunState:
        """Graceful: the job gets SIGTERM, checkpoints and exits."""


TARGETS: PluginTable[Target] = PluginTable("target", "spottrain.targets", {
    "skypilot": "launcher.targets.skypilot",
    "vessl": "launcher.targets.vessl",
    "local": "launcher.targets.local",
})


def get_target(name: str) -> Target:
    try:
        return TARGETS.get(name)
    except UserError as exc:
        raise LaunchError(str(exc)) from None


def target_names() -> list[str]:
    return TARGETS.names()
