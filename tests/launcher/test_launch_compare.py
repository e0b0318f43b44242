"""`launch compare RUN_A RUN_B`: the config diff and final metrics from MLflow, and the overlaid loss curves."""

from __future__ import annotations

import time

import pytest

from launcher import operations as ops
from launcher.errors import LaunchError
from launcher.registry import Registry, RunRecord


def compare(registry, run_a, run_b, plot=None) -> str:
    """What `launch compare RUN_A RUN_B [--plot FILE]` prints."""
    ws = ops.Workspace(registry.project_dir, registry)
    text = ops.compare_text(ops.compare_runs(ws, [run_a, run_b]))
    return text + (f"\n\n{ops.plot_runs(ws, [run_a, run_b], plot)}" if plot else "")


@pytest.fixture
def two_runs(tmp_path, mlflow_sqlite):
    from mlflow.tracking import MlflowClient

    uri = mlflow_sqlite(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("weighted-mtp/test")
    registry = Registry(tmp_path)
    for run_id, lr, losses in (("run-a", "1e-05", [3.0, 2.5, 2.0]), ("run-b", "5e-05", [3.0, 2.0, 1.5])):
        run = client.create_run(experiment, tags={"spottrain.run_id": run_id})
        for key, value in {"train.optim.lr": lr, "train.batch.per_gpu": "4", "task": "baseline"}.items():
            client.log_param(run.info.run_id, key, value)
        for step, loss in enumerate(losses, 1):
            client.log_metric(run.info.run_id, "train/loss", loss, step=step)
        client.log_metric(run.info.run_id, "val/loss", losses[-1] + 0.1, step=3)
        client.log_metric(run.info.run_id, "system/cpu_utilization_percentage", 50.0, step=0)
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state="finished",
                                started=time.time(), store="s", local_dir=str(tmp_path), tracking_uri=uri))
    return registry


def test_compare_lists_only_the_params_that_differ(two_runs):
    out = compare(two_runs, "run-a", "run-b").splitlines()
    assert out[0].split() == ["PARAM", "run-a", "run-b"]
    assert out[1].split() == ["train.optim.lr", "1e-05", "5e-05"]
    assert not any(line.startswith(("train.batch.per_gpu", "task")) for line in out)


def test_compare_shows_final_metrics_side_by_side_without_system_metrics(two_runs):
    out = compare(two_runs, "run-a", "run-b")
    rows = {line.split()[0]: line.split()[1:] for line in out.split("METRIC (final)")[1].splitlines()[1:]}
    assert rows == {"train/loss": ["2", "1.5"], "val/loss": ["2.1", "1.6"]}


def test_compare_plots_the_loss_curves_of_both_runs(two_runs, tmp_path):
    plot = tmp_path / "curves.png"
    out = compare(two_runs, "run-a", "run-b", plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.endswith(f"wrote {plot} (train/loss, val/loss)")


def test_compare_of_an_unknown_run_names_it(two_runs):
    with pytest.raises(LaunchError, match=r"^no run 'run-c' launched from this project"):
        compare(two_runs, "run-a", "run-c")


def test_a_plot_name_without_an_image_suffix_gets_png_and_says_so(two_runs, tmp_path):
    out = compare(two_runs, "run-a", "run-b", tmp_path / "curves")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.endswith(f"wrote {tmp_path / 'curves.png'} (train/loss, val/loss)")


def test_a_plot_into_a_missing_directory_is_a_one_line_error(two_runs, tmp_path):
    target = tmp_path / "no" / "such" / "curves.png"
    with pytest.raises(LaunchError) as caught:
        compare(two_runs, "run-a", "run-b", target)
    assert str(caught.value) == f"--plot: cannot write {target}: No such file or directory"


def test_the_compare_view_holds_the_diff_and_the_final_metrics(two_runs):
    from launcher.views import CompareView

    view = ops.compare_runs(ops.Workspace(two_runs.project_dir, two_runs), ["run-a", "run-b"])
    assert CompareView.model_validate_json(view.model_dump_json()) == view
    assert view.config_diff == {"train.optim.lr": ["1e-05", "5e-05"]}
    assert view.metrics == {"train/loss": [2.0, 1.5], "val/loss": [2.1, 1.6]}


def test_the_cli_and_the_hub_give_the_same_config_diff_of_two_launched_runs(tmp_path, private_home):
    """Both faces compare through one operation: the settings each run's launch shipped."""
    import json

    from hub_helpers import client_for, hub_project
    from launch_helpers import plan_launch, run_launch

    project = hub_project(tmp_path / "project")
    registry = Registry(project)
    for run_id, lr in (("run-a", "1e-3"), ("run-b", "3e-3")):
        plan = plan_launch("baseline", target="local", project_dir=project, profile="local", run_id=run_id,
                           overrides=[f"train.optim.lr={lr}"])
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="local", state="stopped",
                                started=time.time(), store="s", local_dir=str(tmp_path), tracking_uri="",
                                project=str(project), recipe_document=plan.loaded.shipped()))
    cli = json.loads(run_launch("compare", "run-a", "run-b", "--json", home=private_home, cwd=project).stdout)
    with client_for(project) as client:
        hub = client.get("/api/compare", params={"run": ["run-a", "run-b"]}).json()
    assert cli["config_diff"] == hub["config_diff"] == {"train.optim.lr": ["0.001", "0.003"]}


# what a real run logs besides its results: speed, transfers, checkpoints, the ledger, where it is, its learning rate
NOISE = {"perf/step_seconds": (0.5, 0.25), "transfer/upload_bytes": (9159110.0, 12345678.0),
         "checkpoint/upload_retries": (0.0, 1.0), "ledger/device_hours": (1.5, 2.0), "train/epoch": (3.0, 3.0),
         "train/learning_rate": (1e-05, 5e-05), "test/accuracy": (0.123456, 0.5), "train/accuracy": (0.75, 0.8),
         "val/perplexity": (8.16617, 4.953)}


@pytest.fixture
def noisy_runs(two_runs):
    """The two runs with the bookkeeping metrics a real run logs, and more results."""
    from mlflow.tracking import MlflowClient

    for index, run_id in enumerate(("run-a", "run-b")):
        record = two_runs.get(run_id)
        client = MlflowClient(record.tracking_uri)
        run = client.search_runs(client.search_experiments()[0].experiment_id,
                                 f"tags.`spottrain.run_id` = '{run_id}'")[0]
        for key, values in NOISE.items():
            client.log_metric(run.info.run_id, key, values[index], step=3)
    return two_runs


def _metric_rows(text: str) -> list[list[str]]:
    table = text.split("METRIC (final)")[1].split("\n\n")[0]
    return [line.split() for line in table.splitlines()[1:] if line.strip() and not line.startswith("(")]


def test_compare_shows_losses_and_evaluation_metrics_first_and_leaves_the_bookkeeping_out(noisy_runs):
    out = compare(noisy_runs, "run-a", "run-b")
    assert _metric_rows(out) == [["train/loss", "2", "1.5"], ["val/loss", "2.1", "1.6"],
                                 ["val/perplexity", "8.166", "4.953"], ["test/accuracy", "0.1235", "0.5"],
                                 ["train/accuracy", "0.75", "0.8"]]
    assert out.splitlines()[-1] == ("(6 bookkeeping metrics left out: perf/*, transfer/*, checkpoint/*, ledger/*, "
                                    "epoch, learning rate; --all shows them)")
    assert "e+" not in out


def test_compare_all_shows_the_bookkeeping_after_the_results_in_readable_numbers(noisy_runs):
    ws = ops.Workspace(noisy_runs.project_dir, noisy_runs)
    out = ops.compare_text(ops.compare_runs(ws, ["run-a", "run-b"]), every_metric=True)
    rows = _metric_rows(out)
    assert [row[0] for row in rows] == [
        "train/loss", "val/loss", "val/perplexity", "test/accuracy", "train/accuracy", "checkpoint/upload_retries",
        "ledger/device_hours", "perf/step_seconds", "train/epoch", "train/learning_rate", "transfer/upload_bytes"]
    assert rows[-1] == ["transfer/upload_bytes", "9,159,110", "12,345,678"]
    assert rows[-2] == ["train/learning_rate", "1e-05", "5e-05"] and "left out" not in out


def test_the_json_keeps_every_metric_in_the_same_order(noisy_runs):
    view = ops.compare_runs(ops.Workspace(noisy_runs.project_dir, noisy_runs), ["run-a", "run-b"])
    assert list(view.metrics)[:5] == ["train/loss", "val/loss", "val/perplexity", "test/accuracy", "train/accuracy"]
    assert view.metrics["transfer/upload_bytes"] == [9159110.0, 12345678.0]  # the values themselves, unrounded


@pytest.mark.parametrize("value, shown", [(None, "-"), (2.0, "2"), (0.123456, "0.1235"), (812.44, "812.4"),
                                          (9159110.0, "9,159,110"), (-2500.4, "-2,500"), (3e-05, "3e-05"),
                                          (0.0, "0"), (float("nan"), "nan")])
def test_a_metric_reads_as_a_person_writes_it(value, shown):
    from launcher.compare import fmt

    assert fmt(value) == shown


def test_launch_compare_all_is_the_flag_that_shows_the_bookkeeping(noisy_runs, monkeypatch):
    from click.testing import CliRunner

    from launcher.cli import cli

    monkeypatch.setenv("LAUNCH_PROJECT_DIR", str(noisy_runs.project_dir))
    monkeypatch.delenv("SPOTTRAIN_DB", raising=False)
    short = CliRunner().invoke(cli, ["compare", "run-a", "run-b"])
    every = CliRunner().invoke(cli, ["compare", "run-a", "run-b", "--all"])
    assert (short.exit_code, every.exit_code) == (0, 0), short.output + every.output
    assert "transfer/upload_bytes" not in short.output and "--all shows them" in short.output
    assert ["transfer/upload_bytes", "9,159,110", "12,345,678"] in [line.split() for line in every.output.splitlines()]
