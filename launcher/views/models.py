"""The Model Registry as `launch models --json` prints it and the hub's Models page shows it: each registered
name, its versions (newest first), their aliases and the run each was made from."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


class ModelVersionView(BaseModel):
    name: str
    version: str
    aliases: list[str] = Field(default_factory=list)
    created: float = Field(description="When it was registered, seconds since the epoch.")
    run_id: Optional[str] = Field(None, description="The spottrain run it was made from (None: registered by "
                                                    "something else).")
    mlflow_run_id: Optional[str] = None
    checkpoint: Optional[str] = Field(None, description="final, best or a step, as registered.")
    step: Optional[int] = None
    weights: Optional[str] = Field(None, description="Where its weights are: a directory of the run's store.")
    commit: Optional[str] = None
    goodput: Optional[float] = None
    device_hours: Optional[str] = Field(None, description="GPU-hours (rank-hours on CPU) of the run.")
    metrics: dict[str, float] = Field(default_factory=dict, description="The evaluation metrics it was "
                                                                        "registered with.")
    missing_files: Optional[list[str]] = Field(None, description="Files of its manifest the store no longer "
                                                                 "holds; None: not checked.")
    relaunch: list[str] = Field(default_factory=list, description="`launch recipe …` arguments that resolve "
                                                                  "the recipe the run was launched with.")


class RegisteredModelView(BaseModel):
    name: str
    description: str = ""
    versions: list[ModelVersionView] = Field(default_factory=list)
