"""Two tiny training scripts a team might have, written into a test project: one with the plain-PyTorch
integration, one that knows nothing of spottrain. Both are deterministic (a weight that accumulates a function of
the step), so an interrupted run can be compared with an uninterrupted one byte for byte."""

WITH_INTEGRATION = '''
import argparse, json, math, os, sys, time
from pathlib import Path

import yaml
from spottrain.integrations import script as spottrain

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
config = yaml.safe_load(open(parser.parse_args().config))
rank = int(os.environ.get("RANK", 0))
Path("started").mkdir(exist_ok=True)
(Path("started") / f"rank-{rank}").touch()  # the script ran (a refused store must stop the run before this)
if rank == 0 and os.environ.get("MLFLOW_RUN_ID"):
    import mlflow  # the script's own MLflow logging lands in the run's one MLflow run
    with mlflow.start_run():
        mlflow.set_tag("own.logging", "yes")
if config["crash"]:
    raise ValueError("boom before the first checkpoint")
if config["exit_code"]:
    sys.exit(config["exit_code"])  # a code of the job contract, from a rank: torchrun itself exits 1
step, weight = 0, 0.0
resume = spottrain.resume_dir()
if resume is not None:
    state = json.loads((resume / "state.json").read_text())
    step, weight = state["step"], state["weight"]
total = config["steps"]
while step < total:
    time.sleep(config["step_seconds"])
    step += 1
    weight += config["lr"] * math.sin(step)
    spottrain.report(step, total, **{"train/loss": 1.0 / step, "train/weight": weight})
    stop = spottrain.should_stop()
    if rank == 0 and (step % config["save_every"] == 0 or stop or step == total):
        path = spottrain.checkpoint_dir() / f"checkpoint-{step}"
        path.mkdir()
        (path / "state.json").write_text(json.dumps({"step": step, "weight": weight}))
        spottrain.checkpoint_saved(path, step, metric=abs(weight))
    if stop:
        sys.exit(0)
if rank == 0:  # the final weights, published as the run's final export
    spottrain.export_dir().mkdir(parents=True, exist_ok=True)
    (spottrain.export_dir() / "weight.json").write_text(json.dumps({"weight": weight}))
'''

WITHOUT_INTEGRATION = '''
import argparse, json, os, time
from pathlib import Path

import yaml

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
config = yaml.safe_load(open(parser.parse_args().config))
out = Path(os.environ.get("SPOTTRAIN_CHECKPOINT_DIR", "checkpoints"))
resume = os.environ.get("SPOTTRAIN_RESUME_DIR")
step = json.loads((Path(resume) / "state.json").read_text())["step"] if resume else 0
while step < config["steps"]:
    time.sleep(config["step_seconds"])
    step += 1
    if int(os.environ.get("RANK", 0)) == 0 and step % config["save_every"] == 0:
        path = out / f"ckpt-step-{step}"
        path.mkdir()
        (path / "state.json").write_text(json.dumps({"step": step}))
'''


def recipe(script: str, **config) -> str:
    settings = {"steps": 40, "lr": 0.5, "save_every": 10, "step_seconds": 0.15, "crash": False, "exit_code": 0, **config}
    return f"""\
name: {script.replace('_', '-')}
task: command
image: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel
command: {script}.py --config {{config}}
resources: {{accelerator: A100, gpus: 2, recovery: {{max_restarts_on_errors: 3}}}}
code: {{repo: github.com/team/project}}
mlflow: {{experiment: team/{script}, run_name: {script}}}
config: {settings}
train:
  checkpoint: {{uri: runs/store, local_dir: runs/local, keep: 2, best_metric: weight, best_mode: min}}
profiles:
  local: {{}}
"""
