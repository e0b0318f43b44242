"""Two nodes on one machine: the run script of the SkyPilot task, started once per node with the variables SkyPilot
sets on each (SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS, ...), forms one torchrun job across both through the rendered
rendezvous, and ends bit for bit where one node with the same number of ranks ends.

Each node has its own working copy and local disk (`local/` under it); the checkpoint store is shared, as a
bucket is. Node 0 is the run's root, so rank 0's MLflow database is under `<root>/local`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from launcher.targets.local import processes
from launcher.plan import plan_launch
from launcher.requests import LaunchRequest
from launcher.targets import skypilot
from tests.trainer.harness import PROJECT, STEPS, TrainingRun, assert_runs_match, attempt_env, resume_overrides

pytestmark = pytest.mark.slow

NODES = 2


def skypilot_task(run: TrainingRun) -> dict:
    overrides = (f"train.checkpoint.uri={run.store}", "train.checkpoint.local_dir=local", *run.overrides)
    plan = plan_launch(LaunchRequest("baseline", "skypilot", profile="local", gpus=1, nodes=NODES,
                                     overrides=overrides, run_id=run.run_id), PROJECT)
    return yaml.safe_load(skypilot.render(plan, None))


def test_two_nodes_form_one_job_from_the_rendered_rendezvous_and_match_one_node(reference, tmp_path):
    run = TrainingRun("two-nodes", tmp_path, resume_overrides(2))
    task = skypilot_task(run)
    assert task["num_nodes"] == NODES
    nodes = [tmp_path] + [tmp_path / f"node{rank}" for rank in range(1, NODES)]
    for workdir in nodes:
        shutil.copytree(PROJECT / "recipes", workdir / "recipes")
    marker = processes.new_marker()
    # rank 0's MLflow store, named so node 1 reaches it too (as every node reaches a server); samples every 0.5 s
    tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{run.local}/mlflow.db",
                "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5"}
    started = []
    for rank, workdir in enumerate(nodes):
        env = {**attempt_env(run.run_id, marker), **{k: str(v) for k, v in task["envs"].items()}, **tracking,
               "SKYPILOT_NODE_RANK": str(rank), "SKYPILOT_NUM_NODES": str(NODES),
               "SKYPILOT_NODE_IPS": "\n".join(["127.0.0.1"] * NODES), "SKYPILOT_NUM_GPUS_PER_NODE": "1"}
        log = open(tmp_path / f"attempt-node{rank}.log", "w")
        started.append(subprocess.Popen(["bash", "-c", task["run"]], cwd=workdir, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True))
    try:
        codes = [process.wait(timeout=300) for process in started]
    finally:
        processes.signal_marked(marker, 9)
    logs = {rank: (tmp_path / f"attempt-node{rank}.log").read_text()[-3000:] for rank in range(NODES)}
    assert codes == [0] * NODES, logs
    assert (tmp_path / "node1" / "local" / run.run_id).is_dir(), "node 1 kept its own local checkpoint copy"
    assert_runs_match(run, reference(2), STEPS)
    _, logged = run._mlflow_run()
    cpu = {key for key in logged.data.metrics if key.endswith("/cpu_utilization_percentage")}
    assert cpu == {"system/node0/cpu_utilization_percentage", "system/node1/cpu_utilization_percentage"}, logs
