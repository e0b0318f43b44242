"""Secret values: resolved by name from the environment and `.env`, masked for anything a person sees.

Two types keep display and launch apart: a render for display only ever receives `MaskedSecrets`, and a target's
launch accepts only `ResolvedSecrets`, so a mask can never reach a job and a value can never reach a dry run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from launcher.errors import LaunchError

MASK = "********"
ENV_FILE = ".env"


class MaskedSecrets:
    """Names only; every value reads as the mask."""

    def __init__(self, names):
        self.names = tuple(names)

    def value(self, name: str) -> str:
        return MASK


class ResolvedSecrets:
    """The real values, held in memory for one launch."""

    def __init__(self, values: Mapping[str, str]):
        self._values = dict(values)
        self.names = tuple(self._values)

    def value(self, name: str) -> str:
        return self._values[name]

    def as_dict(self) -> dict[str, str]:
        return dict(self._values)

    def __repr__(self) -> str:  # never print values, even by accident
        return f"ResolvedSecrets({', '.join(self.names)})"


def resolve_secrets(names, project_dir: Path, environ: Optional[Mapping[str, str]] = None, *,
                    required: bool = True) -> ResolvedSecrets:
    """Environment first, then `<project>/.env`; an empty value counts as missing (a `.env` copied from
    `.env.example` and not filled in). A missing name is an error listing every missing one, unless
    `required` is False (a local run needs no cloud credentials and passes on the ones it finds)."""
    from dotenv import dotenv_values  # only a launch needs it

    environ = os.environ if environ is None else environ
    env_file = project_dir / ENV_FILE
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    values, missing = {}, []
    for name in names:
        if environ.get(name):
            values[name] = environ[name]
        elif from_file.get(name):
            values[name] = from_file[name]
        else:
            missing.append(name)
    if missing and required:
        raise LaunchError(f"missing secret{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
                          f"export {'them' if len(missing) > 1 else 'it'} or add to {env_file} "
                          f"(names are listed in .env.example)")
    return ResolvedSecrets(values)
