"""Plug-ins by name: a table of built-ins plus the entry points of other installed packages.

Targets (launcher) and training tasks (trainer) are looked up here, never by if-chains: a built-in is one line
in its table; a package of a team's own adds one by an entry point in the table's group (as torchx loads
schedulers), e.g. in its pyproject.toml `[project.entry-points."spottrain.tasks"] toy = "toy_task:SPEC"`.
Entry points are read only when a name is not built in, or when every name is listed.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Generic, TypeVar

from spottrain_contract.errors import UserError

T = TypeVar("T")


def load_object(reference: str):
    """`package.module:attribute` → the attribute, importing the module."""
    module, _, attribute = reference.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


class PluginTable(Generic[T]):
    """`builtin` maps a name to the plug-in, or to its `module:attribute` reference, loaded on first use."""

    def __init__(self, kind: str, group: str, builtin: dict[str, T | str]):
        self.kind, self.group, self.builtin = kind, group, builtin

    def get(self, name: str) -> T:
        if name in self.builtin:
            value = self.builtin[name]
            return load_object(value) if isinstance(value, str) else value
        for entry in metadata.entry_points(group=self.group):
            if entry.name == name:
                return entry.load()
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown {self.kind} '{name}': {hint}expected one of {', '.join(known)}")

    def names(self) -> list[str]:
        plugged = [e.name for e in metadata.entry_points(group=self.group) if e.name not in self.builtin]
        return [*self.builtin, *sorted(plugged)]
