"""The errors a user can cause on the launcher's side, each printed as one line by the CLI (exit code 2)."""

from __future__ import annotations

from spottrain_contract.errors import RecipeError, UserError


class LaunchError(UserError):
    """A refused launch or a run that cannot be found or reached: the message is the whole story."""


class RunNotFound(LaunchError):
    """A run id the run database does not hold (the hub's API answers 404)."""

    status = 404


class RunIdTaken(LaunchError):
    """A new run's id is another run's already: a run or draft is created, never written over another."""

    status = 409


class SweepNotFound(LaunchError):
    """No search recorded for a sweep: a plain grid (every cell trains to the end), or no sweep at all (404)."""

    status = 404


__all__ = ["LaunchError", "RecipeError", "RunIdTaken", "RunNotFound", "SweepNotFound", "UserError"]
