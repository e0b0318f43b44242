"""Pipelines by name: each module supplies which samples a stage uses and how model outputs become a loss.

The loop, checkpointing and tracking are shared; adding a pipeline is one module and one line here.
"""

from __future__ import annotations

import importlib

PIPELINES = {
    "baseline": "spottrain.pipelines.baseline",
    "critic": "spottrain.pipelines.critic",
    "verifiable": "spottrain.pipelines.verifiable",
    "rho1": "spottrain.pipelines.rho1",
}


def create_pipeline(recipe):
    """The pipeline the recipe names, built from its `train` options."""
    if recipe.pipeline not in PIPELINES:
        raise ValueError(f"pipeline: {recipe.pipeline!r} is not available in this trainer "
                         f"(available: {', '.join(PIPELINES)})")
    return importlib.import_module(PIPELINES[recipe.pipeline]).create(recipe)
