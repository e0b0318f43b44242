"""Early stopping's count: patience evaluations without an improvement of min_delta, kept across a resume."""

from __future__ import annotations

import json

from spottrain.early_stopping import EarlyStopping
from spottrain_contract.schema import EarlyStopping as EarlyStoppingSettings


def test_early_stopping_stops_after_patience_evaluations_without_improvement_and_resumes_its_count():
    settings = EarlyStoppingSettings(patience=3, min_delta=0.01)
    values = [0.50, 0.60, 0.605, 0.58, 0.70, 0.69, 0.70, 0.705, 0.71]  # improvements at 0, 1, 4 only
    stopping = EarlyStopping(settings, "val/accuracy", "max")
    stops = [stopping.update({"val/accuracy": v}) for v in values[:7]]
    assert stops == [False] * 7 and stopping.stale == 2
    resumed = EarlyStopping(settings, "val/accuracy", "max")
    resumed.load_state_dict(json.loads(json.dumps(stopping.state_dict())))
    assert resumed.update({"val/accuracy": values[7]}) is True  # the third evaluation without +0.01
    assert resumed.best == 0.70 and resumed.stopped
    assert EarlyStopping(None, "val/accuracy", "max").update({"val/accuracy": 0.0}) is False
    minimise = EarlyStopping(EarlyStoppingSettings(patience=1), "val/loss", "min")
    assert [minimise.update({"val/loss": v}) for v in (1.0, 0.9, 0.95)] == [False, False, True]
