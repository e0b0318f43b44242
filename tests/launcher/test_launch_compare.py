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
def two_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
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
