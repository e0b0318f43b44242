"""The stratified train/val/test split of a catalog: per tier, a seeded shuffle cut at the configured fractions.

Computed once per run and kept with it (`RunFiles`, as image ids), so every attempt and every evaluation uses
the same test images even if metadata.csv gains rows later; a stored split naming an image the catalog no longer
has is an error, not a silent reshuffle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from spottrain.tasks.ranking.catalog import Catalog
from spottrain_contract.errors import ConfigurationError

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSplit:
    train: np.ndarray  # catalog indices, ascending
    val: np.ndarray
    test: np.ndarray

    def part(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def to_json(self, catalog: Catalog) -> bytes:
        return json.dumps({name: [catalog.ids[i] for i in self.part(name)] for name in PARTS}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, catalog: Catalog, where: str) -> "DataSplit":
        position = {image_id: i for i, image_id in enumerate(catalog.ids)}
        stored = json.loads(data)
        parts = {}
        for name in PARTS:
            unknown = [image_id for image_id in stored[name] if image_id not in position]
            if unknown:
                raise ConfigurationError(f"train.data.metadata: the run's stored split ({where}) names {len(unknown)} "
                                         f"image id(s) no longer in it, e.g. {unknown[0]!r}: restore those rows, "
                                         f"or start a new run (to judge a run on another labelled set, keep its "
                                         f"metadata and pass `launch eval RUN --option labels=CSV`)")
            parts[name] = np.sort(np.asarray([position[i] for i in stored[name]], dtype=np.int64))
        return cls(**parts)


def stratified_split(tiers: np.ndarray, fractions: tuple[float, float, float], seed: int) -> DataSplit:
    """Within each tier: shuffle with `seed`, then the first round(train·n) images train, the next
    round(val·n) validate, the rest test. Each part keeps the tiers' proportions to within one image."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PARTS}
    for tier in np.unique(tiers):
        members = np.flatnonzero(tiers == tier)
        members = members[np.random.default_rng([seed, int(tier)]).permutation(len(members))]
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        n_val = min(n_val, len(members) - n_train)
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return DataSplit(**{name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()})
