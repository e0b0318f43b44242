"""The Weighted-MTP family (seed 004, PIPELINES.md): baseline, critic, verifiable and rho1.

Each stage is a task module; what they share (the code-solution data, the multi-token model, validation and
export) is `CodeMtpWorkload`, which each one composes, and the math lives in `losses` and `value_math`.
"""
