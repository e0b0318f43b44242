"""What the launcher and the trainer agree on, in one place both may import (standard library only)."""

import os
from pathlib import Path
from typing import Optional

TRAINER_MODULE = "spottrain"
RUN_ID_ENV = "SPOTTRAIN_RUN_ID"  # stable across restarts and recoveries: the trainer resumes by it
GIT_COMMIT_ENV = "SPOTTRAIN_GIT_COMMIT"
EXIT_FILE_ENV = "SPOTTRAIN_EXIT_FILE"  # torchrun reports any worker failure as 1; the trainer writes its code here
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "checkpointed on a preemption notice, start me again and I resume"
MASTER_PORT = 29500
PROGRESS_FILE = "progress.json"  # in <checkpoint.local_dir>/<run id>/: {"step", "total"}, written by rank 0


def mlflow_tracking_uri(configured: Optional[str], local_dir: str) -> str:
    """The recipe's server, else $MLFLOW_TRACKING_URI, else a SQLite store beside the local checkpoints."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(local_dir).resolve()}/mlflow.db"
