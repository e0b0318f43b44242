"""Secret values: resolved by name from the environment and `.env`, masked for anything a person sees.

Two types keep display and launch apart: a render for display only ever receives `MaskedSecrets`, and a target's
launch accepts only `ResolvedSecrets`, so a mask can never reach a job and a value can never reach a dry run.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional

from launcher.errors import LaunchError

MASK = "********"
ENV_FILE = ".env"
MASKED_SUBSTRING = 4  # any run this long of a secret value is masked in text a platform sends back


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
    environ = os.environ if environ is None else environ
    env_file = project_dir / ENV_FILE
    from_file = read_env_file(env_file) if env_file.is_file() else {}
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


def read_env_file(path: Path) -> dict[str, str]:
    """`.env` values byte-exact: quoting as python-dotenv documents it, but no `${VAR}` interpolation (a token
    may contain `$`) and no newline translation (a quoted value may contain a bare CR). Warns once when the
    file is readable by group or others."""
    from dotenv import dotenv_values  # only a launch needs it

    _warn_if_shared(path)
    text = path.read_bytes().decode("utf-8")
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text, newline=""), interpolate=False).items()
            if v is not None}


_warned: set[Path] = set()


def _warn_if_shared(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and path not in _warned:
        _warned.add(path)
        print(f"warning: {path} holds secrets and is readable by group or others (mode {mode:04o}): "
              f"chmod 600 {path}", file=sys.stderr)


def mask_text(text: str, values: Iterable[str]) -> str:
    """`text` with every run of {MASKED_SUBSTRING}+ characters that also occurs in a secret value replaced by the
    mask: a platform that echoes a field back cut, re-wrapped or line by line never shows a piece of it."""
    values = [value for value in values if value]
    for short in (value for value in values if len(value) < MASKED_SUBSTRING):
        text = text.replace(short, MASK)
    grams = {value[i:i + MASKED_SUBSTRING] for value in values for i in range(len(value) - MASKED_SUBSTRING + 1)}
    if not grams:
        return text
    covered = [False] * len(text)
    for i in range(len(text) - MASKED_SUBSTRING + 1):
        if text[i:i + MASKED_SUBSTRING] in grams:
            covered[i:i + MASKED_SUBSTRING] = [True] * MASKED_SUBSTRING
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
