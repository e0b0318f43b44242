"""What the launcher and the trainer agree on, and nothing else: `launcher → spottrain_contract ← spottrain`.

Torch-free and importing neither half, so a laptop renders recipes without torch and a GPU node trains without
SkyPilot. It holds
- the recipe: the common schema (`schema`), each task's options by name (`tasks`, `wmtp`), the loader with
  extends, profiles and overrides (`recipe`) and its one-line errors (`errors`, `validation`);
- the job contract: environment names, exit codes, run states, the MLflow run-id tag, progress files (`job`);
- the checkpoint store: its backends (`store`), the layout of a run in it (`layout`) and the read side that
  finds complete, best and final checkpoints (`lookup`).
"""
