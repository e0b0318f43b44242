"""Spot-safe training for a team's own script (`task: command`): one module per framework, each importing only
what the script already has.

    spottrain.integrations.script        plain PyTorch (or anything): checkpoint_dir(), resume_dir(), report(),
                                         checkpoint_saved(), should_stop()
    spottrain.integrations.transformers  SpottrainCallback for the Hugging Face Trainer
    spottrain.integrations.lightning     SpottrainCallback for Lightning

Each speaks the node contract of `spottrain_contract.script`, and does nothing outside spottrain (no
SPOTTRAIN_RUN_ID), so the same script still runs on a laptop.
"""
