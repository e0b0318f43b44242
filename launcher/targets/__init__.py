"""Targets by name. Each is one module with the same small interface (torchx's submit = dryrun + schedule):

    render(plan, secrets) -> str      pure: plan in, the exact document the platform receives
    validate(document) -> None        the platform's own schema plus the checks it lacks; raises LaunchError

Modules load lazily, so `launch --help` pays for none of them. Adding a target is one module and one line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from launcher.errors import LaunchError

TARGETS = {
    "skypilot": "launcher.targets.skypilot",
    "vessl": "launcher.targets.vessl",
    "local": "launcher.targets.local",
}


def get_target(name: str) -> ModuleType:
    if name not in TARGETS:
        raise LaunchError(f"unknown target '{name}': expected one of {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name])
