"""The errors a user can cause, each shown as one line (the CLI exits 2, the trainer exits with the
configuration-error code): the message is the whole story, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a refused action, said in one line."""


class RecipeError(UserError):
    """A recipe value is wrong. Names the file (or `--override`), the dotted key and what was expected; `also`
    holds the recipe's further problems, each shown on a line of its own."""

    def __init__(self, source: str, key: str, reason: str, also: tuple["RecipeError", ...] = ()):
        self.source, self.key, self.reason, self.also = source, key, reason, tuple(also)
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__("\n".join([where + reason, *(str(other) for other in self.also)]))


class ConfigurationError(UserError, ValueError):
    """Wrong settings or inputs found while a job runs (a missing data file, a checkpoint written by another
    world size, a store that refuses writes): no restart can heal it, so the job exits with the contract's
    do-not-restart code (`job.DO_NOT_RESTART_EXIT_CODE`)."""
