"""The VLM LoRA task end to end on CPU: the local profile launched as a user would (a tiny LLaVA on the generated
image-text set), its adapter reloaded with peft to generate the same answers, `launch eval` on a checkpoint, the
other tiny families, and a run killed mid-way that resumes bit for bit at ZeRO 2."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.trainer.harness import TrainingRun, adapter_answers, assert_runs_match, launch

pytestmark = pytest.mark.slow

METRICS = ("test/exact_match", "test/bleu4", "test/meteor", "test/rouge_l")


@pytest.fixture
def trained(launched):
    """The recipe as written under the local profile (no sweep: one run), to the end: training, export, generation
    (the session's one training of it: `launched`)."""
    return launched("vlm_ablation", "vlm")


def mlflow_run(project: Path, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/runs/local/mlflow.db")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               filter_string=f"tags.`spottrain.run_id` = '{run_id}'")
    return client, run


def test_the_run_learns_and_keeps_adapter_predictions_and_metrics_in_its_store_and_mlflow(trained):
    final = trained / "runs" / "store" / "vlm" / "final-hf"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (final / "lora_adapter").iterdir()}
    rows = [json.loads(line) for line in (final / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"image", "query", "annotation", "prediction"} <= set(rows[0])
    metrics = json.loads((final / "generation_metrics.json").read_text())
    assert metrics["count"] == 16 and 0 <= metrics["exact_match"] <= 1
    client, run = mlflow_run(trained, "vlm")
    for key in METRICS:
        assert run.data.metrics[key] == pytest.approx(metrics[key.split("/", 1)[1]]), key
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/loss"), key=lambda m: m.step)]
    assert losses[-1] < 0.5 * losses[0]  # it learned the generated set's answers
    assert 0 < int(run.data.tags["trainable_parameters"]) < int(run.data.tags["total_parameters"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"lora_adapter", "predictions.jsonl", "generation_metrics.json"} <= artifacts


def test_the_exported_adapter_loads_with_peft_and_generates_the_same_answers(trained):
    final = trained / "runs" / "store" / "vlm" / "final-hf"
    rows = [json.loads(line) for line in (final / "predictions.jsonl").read_text().splitlines()][:8]
    assert adapter_answers(trained, final / "lora_adapter", rows) == [row["prediction"] for row in rows]


def test_launch_eval_judges_a_checkpoint_s_adapter_on_another_csv(trained):
    test_csv = trained / "runs" / "vlm-data" / "test.csv"
    done = launch(trained, "eval", "vlm", "--checkpoint", "last", "--csv", str(test_csv), "--max-new-tokens", "24")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [saved] = (trained / "runs" / "store" / "vlm" / "eval").glob("step-*.json")
    report = json.loads(saved.read_text())
    assert set(METRICS) <= set(report["metrics"]) and report["metrics"]["test/count"] == 16
    # the last checkpoint is the final step: the same adapter that the run itself judged
    final = json.loads((trained / "runs" / "store" / "vlm" / "final-hf" / "generation_metrics.json").read_text())
    assert report["metrics"]["test/exact_match"] == pytest.approx(final["exact_match"])


@pytest.mark.parametrize("family", ["qwen2_vl", "blip2"])
def test_each_tiny_family_trains_exports_and_generates(tmp_path, family):
    """BLIP-2 with activation checkpointing (the seed's gradient_checkpointing) through the frozen base."""
    run = TrainingRun(family, tmp_path, (f"train.model.id=tiny:{family}", "train.max_steps=6",
                                         f"train.data.generated_dir={tmp_path / 'data'}",
                                         "train.model.merge_full_model=true",
                                         f"train.performance.activation_checkpointing={family == 'blip2'}"),
                      recipe="vlm_ablation")
    assert run.run() == 0, run.last_log()
    final = run.store / family / "final-hf"
    assert (final / "lora_adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((final / "generation_metrics.json").read_text())["count"] == 16
    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(final / "merged")  # a plain model: no adapter layers
    assert not any("lora" in name for name, _ in merged.named_parameters())


KILL_STEPS = 20


def vlm_run(name: str, root: Path) -> TrainingRun:
    return TrainingRun(name, root, (f"train.max_steps={KILL_STEPS}", "train.checkpoint.every_steps=5",
                                    "train.evaluation.enabled=false", f"train.data.generated_dir={root.parent / 'data'}"),
                       recipe="vlm_ablation")


def test_sigkill_mid_run_resumes_bitwise_equal_at_zero2(tmp_path):
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    reference = vlm_run("reference", tmp_path / "reference")
    assert reference.run() == 0, reference.last_log()
    run = vlm_run("killed", tmp_path / "killed")
    run.run_until(lambda r: 10 in r.complete_steps(), signal.SIGKILL, delay=0.2)
    assert run.complete_steps()[-1] < KILL_STEPS
    assert run.run() == 0, run.last_log()
    assert_runs_match(run, reference, KILL_STEPS)


def test_launch_eval_judges_an_adapter_from_anywhere_on_its_base_model(trained):
    final = trained / "runs" / "store" / "vlm" / "final-hf"
    [base_dir] = (trained / "runs" / "local" / "tiny-models").iterdir()
    done = launch(trained, "eval", "--lora-path", str(final / "lora_adapter"), "--model-id", str(base_dir),
                  "--model-type", "llava", "--csv", str(trained / "runs" / "vlm-data" / "test.csv"),
                  "--max-new-tokens", "24", "--output-dir", "adapter-eval")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"evaluating adapter {final / 'lora_adapter'} on {base_dir} on local as job adapter-eval-" in done.stdout
    # the same adapter, base and greedy decoding as the run's own evaluation: the same answers
    assert (trained / "adapter-eval" / "predictions.jsonl").read_text() == (final / "predictions.jsonl").read_text()
