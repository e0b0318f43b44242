"""The errors a user can cause, each printed as one line by the CLI (exit code 2)."""

from __future__ import annotations


class LaunchError(Exception):
    """Bad input or a refused launch: the message is the whole story, no traceback."""


class RecipeError(LaunchError):
    """A recipe value is wrong. Names the file (or `--override`), the dotted key and what was expected."""

    def __init__(self, source: str, key: str, reason: str):
        self.source, self.key, self.reason = source, key, reason
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + reason)
