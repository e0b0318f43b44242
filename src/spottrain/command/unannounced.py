"""The checkpoints of a script without an integration, found in its checkpoint directory: what spottrain can keep
of a script it cannot hear. An entry there whose name holds a step (`checkpoint-500`, `epoch=1-step=40.ckpt`,
`step_40.pt`) is complete once a newer one appears (frameworks save in step order), and the newest once the script
has exited 0. One that the script was writing when it died is never taken.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

_AFTER_STEP = re.compile(r"step[=_-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


def step_in_name(name: str) -> Optional[int]:
    """The step a checkpoint's name holds: the number after `step`, else its last number, else None."""
    found = _AFTER_STEP.search(name)
    if found:
        return int(found.group(1))
    numbers = _NUMBER.findall(name)
    return int(numbers[-1]) if numbers else None


class UnannouncedCheckpoints:
    def __init__(self, checkpoint_dir: Path, after_step: int):
        """`after_step`: the step restored into the directory (what is already in the store)."""
        self.checkpoint_dir, self.newest_taken = checkpoint_dir, after_step

    def newly_complete(self, script_ended: bool) -> Optional[tuple[int, Path]]:
        """The newest complete checkpoint not taken yet (step, path), or None; taken by this call."""
        numbered = sorted((step, path) for path in self.checkpoint_dir.iterdir()
                          if (step := step_in_name(path.name)) is not None and step > self.newest_taken)
        complete = numbered if script_ended else numbered[:-1]
        if not complete:
            return None
        self.newest_taken = complete[-1][0]
        return complete[-1]
