"""The errors a user can cause, each shown as one line (the CLI exits 2, the trainer exits with the
configuration-error code): the message is the whole story, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a refused action, said in one line."""


class RecipeError(UserError):
    """A recipe value is wrong. Names the file (or `--override`), the dotted key and what was expected."""

    def __init__(self, source: str, key: str, reason: str):
        self.source, self.key, self.reason = source, key, reason
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + reason)
