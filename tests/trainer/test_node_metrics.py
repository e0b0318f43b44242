"""Which process logs which node's system metrics, under what name (the monitors logging for real: the multi-node
test and test_tracking_mlflow)."""

from __future__ import annotations

import logging

from spottrain.runtime import Ranks
from spottrain.tracking import ROOT_NODE, node_id, node_system_metrics


def test_a_rank_knows_its_node_from_torchrun_and_the_node_its_name(monkeypatch):
    for name, value in {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "GROUP_RANK": "2"}.items():
        monkeypatch.setenv(name, value)
    assert Ranks.from_env() == Ranks(rank=5, local_rank=1, world_size=8, node=2)
    assert [node_id(n) for n in (ROOT_NODE, 2)] == ["node0", "node2"]
    monkeypatch.delenv("GROUP_RANK")
    assert Ranks.from_env().node == ROOT_NODE  # one node (run without torchrun's GROUP_RANK)


def test_other_nodes_log_nothing_where_they_have_nowhere_to_log(tmp_path, caplog):
    """Node 0's metrics are its tracker's; a run id rank 0 could not make (its server was down) leaves the others
    none; a SQLite store is a file on rank 0's node, which another node must not create empty on its own disk."""
    caplog.set_level(logging.INFO, logger="spottrain.tracking")
    absent = tmp_path / "local" / "mlflow.db"
    assert node_system_metrics(f"sqlite:///{absent}", "0123abcd", ROOT_NODE) is None
    assert node_system_metrics("http://mlflow.example:5000", None, 1) is None
    assert node_system_metrics(f"sqlite:///{absent}", "0123abcd", 1) is None
    assert not absent.exists() and not absent.parent.exists()
    assert f"system metrics of node1 not logged: MLflow's store sqlite:///{absent} is on rank 0's node" in caplog.text
