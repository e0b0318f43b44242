"""Sweeps: a recipe with axes, one run per cell. `cells` plans and launches them, `parent` keeps their MLflow
parent run, `status` groups them under their sweep in the run lists, `ablation` compares them
(`launch compare SWEEP`)."""
