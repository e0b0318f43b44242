"""Where the operations work: the project directory and its run database, opened once per process and passed to
every operation (the CLI opens one per command, the hub one when it starts). The database is opened on first use:
a command that reads no runs (`launch list`, `launch render`) loads no database driver."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Optional

from launcher.registry import Registry, registry_of


class Workspace:
    def __init__(self, project_dir: Path, registry: Optional[Registry] = None, *, every_project: bool = False):
        self.project_dir = Path(project_dir)
        self.every_project = every_project
        if registry is not None:
            self.registry = registry

    @classmethod
    def open(cls, project_dir: Optional[Path] = None, *, every_project: bool = False) -> "Workspace":
        """The project holding `recipes/` (default: found from the working directory upward); `every_project`:
        listings show every project's runs in the database (the hub, `launch status --all-projects`)."""
        from spottrain_contract.recipe import find_project_dir

        return cls(Path(project_dir) if project_dir is not None else find_project_dir(), every_project=every_project)

    @cached_property
    def registry(self) -> Registry:
        return registry_of(self.project_dir, every_project=self.every_project)

    def of_run(self, project: str) -> "Workspace":
        """The workspace of the project a run was launched from (a hub serves every project's runs): its next
        attempt is recorded, logged and resumed there, as if launched from it."""
        if not project or Path(project).resolve() == self.project_dir.resolve():
            return self
        return Workspace(Path(project))
