"""Which complete checkpoints to delete: a pure function, property-tested over random histories."""

from __future__ import annotations

from typing import Iterable, Optional


def checkpoints_to_delete(complete: Iterable[int], *, keep: int, best: Optional[int] = None,
                          final: Iterable[int] = ()) -> list[int]:
    """Keep the newest `keep` complete intermediates; never best, final, or the newest complete checkpoint.

    Only complete checkpoints are candidates: an in-flight one has no manifest yet and is never listed.
    """
    complete = sorted(set(complete))
    if not complete:
        return []
    final = set(final)
    intermediates = [step for step in complete if step != best and step not in final]
    kept = set(intermediates[-keep:]) if keep > 0 else set()
    return [step for step in intermediates if step not in kept and step != complete[-1]]
