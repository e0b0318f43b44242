"""Trained runs registered in a real MLflow server with basic auth and read back by alias give what the run itself
gives: the WMTP final export (a baseline run) the logits of its last checkpoint, the ranker's checkpoint the same
`launch eval` metrics and `launch predict` answer, the VLM's adapter the same metrics and, loaded with peft from
the logged model, the same answers. Each run is the session's one training of its recipe (`launched`); the
runs logged to SQLite beside them, so the registry is named with --mlflow. (Synthetic runs, bad input:
tests/launcher/test_model_registry.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spottrain_contract import layout
from tests.trainer.harness import adapter_answers, launch

pytestmark = pytest.mark.slow

ALIAS = "champion"


@pytest.fixture
def registry(mlflow_auth_server, monkeypatch):
    """The session's server, its credentials where `launch` finds them (the environment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_auth_server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth_server.password)
    return mlflow_auth_server


def registered(project: Path, registry, run_id: str, name: str, checkpoint: str) -> dict:
    """`launch register RUN --name NAME --checkpoint C --alias champion --mlflow URI`: the version it made."""
    done = launch(project, "register", run_id, "--name", name, "--checkpoint", checkpoint, "--alias", ALIAS,
                  "--mlflow", registry.uri, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def succeeded(project: Path, *args: str) -> str:
    done = launch(project, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def logged_model(project: Path, registry, name: str, into: Path) -> tuple[dict, Path]:
    """models:/NAME@champion's lineage.json and its logged model's artifacts, downloaded into `into`."""
    import mlflow

    from launcher.model_registry import LINEAGE_FILE, ModelRef, version_of
    from launcher.operations.models import logged_model_id
    from launcher.registering import model_registry

    with model_registry(registry.uri, project) as models:
        version = version_of(models, ModelRef(name, ALIAS))
        location = models.client.get_logged_model(logged_model_id(version)).artifact_location
        files = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(into),
                                                         tracking_uri=registry.uri))
    return json.loads((files / LINEAGE_FILE).read_text()), files


def test_the_wmtp_final_export_read_by_alias_gives_the_logits_of_the_run_s_last_checkpoint(launched, registry,
                                                                                          tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from launcher import operations as ops

    project = launched("baseline", "wmtp")
    version = registered(project, registry, "wmtp", "wmtp-baseline", "final")
    run_id, step = ops.resolve_model(ops.Workspace.open(project), f"models:/wmtp-baseline@{ALIAS}", registry.uri)
    lineage, _ = logged_model(project, registry, "wmtp-baseline", tmp_path)
    weights = Path(lineage["weights"]["uri"])
    assert (run_id, step, version["weights"]) == ("wmtp", str(lineage["weights"]["step"]), str(weights))
    assert {entry["path"]: entry["sha256"] for entry in lineage["weights"]["files"]} == {
        path.name: layout.sha256_of(path) for path in weights.iterdir()}
    exported = AutoModelForCausalLM.from_pretrained(weights).eval()
    # the run's own last checkpoint: its DeepSpeed model states, the trunk and first head under lm.
    states = torch.load(project / "runs" / "store" / layout.step_prefix("wmtp", int(step)) /
                        "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    trained = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(weights)).eval()
    trained.load_state_dict({key[len("lm."):]: value for key, value in states.items() if key.startswith("lm.")})
    tokens = torch.arange(1, 33).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(exported(tokens).logits, trained(tokens).logits)


def eval_report(project: Path, run_id: str, step: int) -> dict:
    return json.loads((project / "runs" / "store" / run_id / layout.EVALUATIONS /
                       f"{layout.step_tag(step)}.json").read_text())


def test_a_ranker_checkpoint_by_alias_evaluates_and_predicts_as_the_run_itself(launched, registry):
    project = launched("pairwise_ranking", "ranker")
    best = json.loads((project / "runs" / "store" / "ranker" / layout.BEST_POINTER).read_text())["step"]
    version = registered(project, registry, "ranker", "ranker-best", "best")
    assert (version["checkpoint"], version["step"]) == ("best", best)
    succeeded(project, "eval", "ranker")
    own = eval_report(project, "ranker", best)["metrics"]
    said = succeeded(project, "eval", f"models:/ranker-best@{ALIAS}", "--mlflow", registry.uri)
    assert f"models:/ranker-best@{ALIAS} is run ranker, step {best}" in said
    assert eval_report(project, "ranker", best)["metrics"] == own
    images = project / "runs" / "ranking-data" / "images"
    pair = (str(images / "a_001.png"), str(images / "b_001.png"))

    def answer(*ranker: str) -> list[str]:
        return [line for line in succeeded(project, "predict", *ranker, *pair).splitlines()
                if line.startswith(("winner: ", "score difference: "))]

    assert answer(f"models:/ranker-best@{ALIAS}", "--mlflow", registry.uri) == answer("ranker") != []


def test_a_vlm_adapter_by_alias_evaluates_as_the_run_did_and_its_logged_adapter_loads_with_peft(launched, registry,
                                                                                                 tmp_path):
    project = launched("vlm_ablation", "vlm")
    final = project / "runs" / "store" / "vlm" / layout.FINAL_EXPORT
    version = registered(project, registry, "vlm", "vlm-adapter", "final")
    succeeded(project, "eval", f"models:/vlm-adapter@{ALIAS}", "--mlflow", registry.uri,
              "--csv", str(project / "runs" / "vlm-data" / "test.csv"), "--max-new-tokens", "24")
    judged = eval_report(project, "vlm", version["step"])["metrics"]
    own = json.loads((final / "generation_metrics.json").read_text())  # the run's judgement of its final adapter
    assert {key: judged[f"test/{key}"] for key in ("exact_match", "bleu4", "meteor", "rouge_l", "count")} == {
        key: pytest.approx(own[key]) for key in ("exact_match", "bleu4", "meteor", "rouge_l", "count")}
    _, files = logged_model(project, registry, "vlm-adapter", tmp_path)
    rows = [json.loads(line) for line in (final / "predictions.jsonl").read_text().splitlines()][:8]
    assert adapter_answers(project, files / "lora_adapter", rows) == [row["prediction"] for row in rows]
