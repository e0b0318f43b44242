"""What a ranking is judged by, from one score per image: every pair's outcome follows from the two scores, so
an evaluation scores N images once instead of running O(N²) pairs through the model."""

from __future__ import annotations

import numpy as np
import torch

from spottrain.tasks.ranking.model import ordered_correctly, pair_loss
from spottrain_contract.ranking import TIERS


def pair_outcomes(scores: torch.Tensor, tiers: np.ndarray, first: np.ndarray, second: np.ndarray,
                  loss: str, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair loss, per-pair correct) for pairs of positions into `scores`/`tiers`."""
    differences = scores[first] - scores[second]
    labels = torch.from_numpy(np.where(tiers[first] < tiers[second], 1.0, -1.0).astype(np.float32))
    return pair_loss(differences, labels, loss, margin), ordered_correctly(differences, labels)


def ranking_report(scores: torch.Tensor, tiers: np.ndarray, first: np.ndarray, second: np.ndarray, loss: str,
                   margin: float, prefix: str) -> dict[str, float]:
    """Loss, accuracy, pair counts, accuracy per tier gap (`<prefix>/accuracy/S-A`, …) and Kendall's τ-b
    between the scores and the tiers (1: the scores order the images exactly as their tiers do)."""
    from scipy.stats import kendalltau

    losses, correct = pair_outcomes(scores, tiers, first, second, loss, margin)
    report = {f"{prefix}/loss": float(losses.mean()), f"{prefix}/accuracy": float(correct.mean()),
              f"{prefix}/total_pairs": float(len(first)), f"{prefix}/correct_predictions": float(correct.sum())}
    better, worse = np.minimum(tiers[first], tiers[second]), np.maximum(tiers[first], tiers[second])
    for high in range(len(TIERS)):
        for low in range(high + 1, len(TIERS)):
            chosen = torch.from_numpy((better == high) & (worse == low))
            if chosen.any():
                report[f"{prefix}/accuracy/{TIERS[high]}-{TIERS[low]}"] = float(correct[chosen].mean())
    tau = kendalltau(scores.double().numpy(), -tiers.astype(np.float64)).statistic
    report[f"{prefix}/kendall_tau"] = float(tau) if np.isfinite(tau) else 0.0
    return report
