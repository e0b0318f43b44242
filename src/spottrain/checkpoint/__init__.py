"""Checkpoints: local save through DeepSpeed, background upload to a store, manifest-last completion,
retention, and resume from the newest complete checkpoint."""
