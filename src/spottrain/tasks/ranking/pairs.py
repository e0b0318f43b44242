"""Pairs of images of different tiers, labelled by tier order, and how an epoch draws them.

A training example is a pair as drawn in one epoch: (epoch, a, b) packed into one integer (`PairCodec`), so the
step sampler shuffles plain indices and the batch knows the epoch its augmentation is drawn from. The pairs of
an epoch are a pure function of (seed, epoch): every tier gap (S–A, S–B, … B–C) gets an equal share of
`pairs_per_epoch` (the remainder to the first gaps), each pair two images drawn uniformly from its two tiers in
random order. Without `pairs_per_epoch`, an epoch is every cross-tier pair of the training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Optional

import numpy as np

from spottrain_contract.errors import ConfigurationError


@dataclass(frozen=True)
class PairCodec:
    images: int  # catalog size
    epochs: int  # epochs an index can name

    def encode(self, epoch: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index((np.full_like(a, epoch), a, b), (self.epochs, self.images, self.images))

    def decode(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, first images, second images) of packed pair indices."""
        return np.unravel_index(np.asarray(indices, dtype=np.int64), (self.epochs, self.images, self.images))


def tier_gaps(tiers: np.ndarray, members: np.ndarray) -> list[tuple[int, int]]:
    """Every (better, worse) pair of tiers present among `members`."""
    present = sorted(set(tiers[members].tolist()))
    return list(combinations(present, 2))


def cross_tier_pairs(tiers: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of `members` whose tiers differ, as (a, b) with a < b."""
    a, b = np.triu_indices(len(members), k=1)
    a, b = members[a], members[b]
    keep = tiers[a] != tiers[b]
    return a[keep], b[keep]


def epoch_pairs(tiers: np.ndarray, members: np.ndarray, seed: int, epoch: int,
                count: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """The training pairs of `epoch`: (first, second) catalog indices, the order of each pair random."""
    rng = np.random.default_rng([seed, epoch, 0x9A125])
    if count is None:
        a, b = cross_tier_pairs(tiers, members)
    else:
        gaps = tier_gaps(tiers, members)
        if not gaps:
            raise ConfigurationError("train.data.metadata: the training split has a single tier: pairs need images "
                                     "of at least two tiers")
        shares = np.full(len(gaps), count // len(gaps))
        shares[: count % len(gaps)] += 1
        firsts, seconds = [], []
        for (better, worse), share in zip(gaps, shares):
            firsts.append(rng.choice(members[tiers[members] == better], share))
            seconds.append(rng.choice(members[tiers[members] == worse], share))
        a, b = np.concatenate(firsts), np.concatenate(seconds)
    swap = rng.random(len(a)) < 0.5  # the better image first in about half the pairs
    return np.where(swap, b, a), np.where(swap, a, b)


def labels(tiers: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """+1 where the first image is the better one (a lower tier index), −1 where the second is."""
    return np.where(tiers[first] < tiers[second], 1.0, -1.0).astype(np.float32)
