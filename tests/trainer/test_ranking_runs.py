"""The ranker end to end on CPU: the local profile launched as a user would (tiny DINOv2, generated images),
judged by `launch eval` on its stored test split and used by `launch predict`; its early stop; and runs killed
mid-epoch that resume bit for bit, with cached features and with augmented pixels."""

from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path

import pytest

from tests.trainer.harness import TrainingRun, assert_runs_match, launch

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 8  # the local profile: 256 pairs an epoch, 2 ranks × 16 pairs a step
SEED_METRICS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "learning_rate")


@pytest.fixture
def trained(launched):
    """The local profile launched in a fresh project, to the end (an early stop or its last epoch): the session's
    one training of it (`launched`)."""
    return launched("pairwise_ranking", "ranker")


def mlflow_history(project: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/runs/local/mlflow.db")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               filter_string=f"tags.`spottrain.run_id` = '{run_id}'")
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def test_launch_eval_scores_the_stored_test_split_above_the_seed_bar(trained):
    done = launch(trained, "eval", "ranker")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "evaluating run ranker (best checkpoint) on local as job ranker-eval-" in done.stdout
    [saved] = (trained / "runs" / "store" / "ranker" / "eval").glob("step-*.json")
    report = json.loads(saved.read_text())
    metrics = report["metrics"]
    assert metrics["test/accuracy"] >= 0.60  # the seed's acceptance bar; deterministic for the recipe's seeds
    split = json.loads((trained / "runs" / "store" / "ranker" / "task" / "split.json").read_text())
    per_tier = len(split["test"]) // 4  # the generated set: the same number of test images in each tier
    assert metrics["test/total_pairs"] == 6 * per_tier * per_tier
    assert metrics["test/correct_predictions"] == round(metrics["test/accuracy"] * metrics["test/total_pairs"])
    assert {f"test/accuracy/{gap}" for gap in ("S-A", "S-B", "S-C", "A-B", "A-C", "B-C")} <= set(metrics)
    assert 0 < metrics["test/kendall_tau"] <= 1
    best = json.loads((trained / "runs" / "store" / "ranker" / "BEST.json").read_text())["step"]
    assert report["step"] == best
    assert f"test/accuracy             {metrics['test/accuracy']:.4f}" in done.stdout


def test_the_run_logs_the_seed_metric_names_and_stops_at_the_right_epoch(trained):
    for key in SEED_METRICS:
        assert mlflow_history(trained, "ranker", key), key
    accuracy = mlflow_history(trained, "ranker", "val/accuracy")
    assert [step for step, _ in accuracy] == [STEPS_PER_EPOCH * (i + 1) for i in range(len(accuracy))]
    patience, best, stale, expected_stop = 4, None, 0, None  # the local profile's early_stopping.patience
    for step, value in accuracy:
        best, stale = (value, 0) if best is None or value > best else (best, stale + 1)
        if stale >= patience:
            expected_stop = step
            break
    final = json.loads((trained / "runs" / "local" / "ranker" / "progress.json").read_text())["step"]
    assert final == (expected_stop or 12 * STEPS_PER_EPOCH)
    assert expected_stop is not None, "the local profile is meant to show an early stop"
    assert accuracy[-1][0] == final


def test_launch_predict_answers_for_two_images_and_ranks_a_folder(trained):
    images = trained / "runs" / "ranking-data" / "images"
    done = launch(trained, "predict", "ranker", str(images / "c_000.png"), str(images / "s_000.png"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"winner: {images / 's_000.png'}" in done.stdout
    assert "score difference: " in done.stdout
    folder = trained / "to-rank"
    folder.mkdir()
    for name in ("b_001.png", "s_002.png", "c_003.png"):
        shutil.copy(images / name, folder / name)
    ranked = launch(trained, "predict", "ranker", "to-rank", "--out", "ranked.csv")
    assert ranked.returncode == 0, ranked.stdout[-3000:] + ranked.stderr[-3000:]
    rows = (trained / "ranked.csv").read_text().splitlines()
    assert rows[0] == "rank,path,score" and len(rows) == 4
    assert rows[1].split(",")[1].endswith("s_002.png")


KILL_PAIRS, KILL_EPOCH_STEPS, KILL_STEPS = 1024, 32, 160  # five epochs, a checkpoint every second one


def ranking_run(name: str, root: Path, *extra: str) -> TrainingRun:
    return TrainingRun(name, root, (f"train.data.image_dir={root.parent / 'images'}", f"train.max_steps={KILL_STEPS}",
                                    f"train.data.pairs_per_epoch={KILL_PAIRS}", "train.early_stopping.patience=100",
                                    *extra), recipe="pairwise_ranking")


@pytest.mark.parametrize("pixels", [False, True], ids=["cached-features", "augmented-pixels"])
def test_sigkill_mid_epoch_resumes_bitwise_equal(tmp_path, pixels):
    augment = ("train.data.augment.hflip=true", "train.data.augment.rotation_degrees=10",
               "train.data.augment.color_jitter=0.1") if pixels else ()
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    reference = ranking_run("reference", tmp_path / "reference", *augment)
    assert reference.run() == 0, reference.last_log()
    run = ranking_run("killed", tmp_path / "killed", *augment)
    delay = random.Random(int(pixels)).uniform(0.05, 0.3)
    run.run_until(lambda r: 2 * KILL_EPOCH_STEPS in r.complete_steps(), signal.SIGKILL, delay=delay)
    assert run.complete_steps()[-1] < KILL_STEPS
    assert run.run() == 0, run.last_log()
    assert_runs_match(run, reference, KILL_STEPS, lr_metric="learning_rate")


OTHER_SET = {"S": 5, "A": 4, "B": 3, "C": 2}  # 14 images: 5·4 + 5·3 + 5·2 + 4·3 + 4·2 + 3·2 = 71 cross-tier pairs


def other_labelled_set(folder: Path, source: Path) -> Path:
    """Another labelled set in `folder`: images of the generated set of another seed (`source`), OTHER_SET of
    each tier, and its metadata.csv (image_id, filename, tier) beside them."""
    from spottrain.tasks.ranking.generated import ensure_generated

    ensure_generated(source, seed=1)
    folder.mkdir()
    rows = ["image_id,filename,tier"]
    for tier, count in OTHER_SET.items():
        for n in range(count):
            name = f"{tier.lower()}_{n:03d}.png"
            shutil.copy(source / name, folder / f"other_{name}")
            rows.append(f"other-{tier}-{n},other_{name},{tier}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder / "metadata.csv"


def test_launch_eval_judges_another_labelled_set_with_the_same_report(trained):
    metadata = other_labelled_set(trained / "other", trained / "other-source")
    done = launch(trained, "eval", "ranker", "--option", "labels=other/metadata.csv")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"on the labelled set {metadata} (14 images)" in done.stdout
    [saved] = (trained / "runs" / "store" / "ranker" / "eval").glob("step-*.json")
    report = json.loads(saved.read_text())
    metrics = report["metrics"]
    assert report["test_data"] == f"the labelled set {metadata} (14 images)"
    assert metrics["test/total_pairs"] == 71  # every cross-tier pair of that set, not of the stored split
    assert {f"test/accuracy/{gap}" for gap in ("S-A", "S-B", "S-C", "A-B", "A-C", "B-C")} <= set(metrics)
    assert -1 <= metrics["test/kendall_tau"] <= 1
    # The same numbers a user would get by hand: the folder's images scored by `launch predict`, pairs counted.
    ranked = launch(trained, "predict", "ranker", "other", "--out", "other-ranked.csv")
    assert ranked.returncode == 0, ranked.stdout[-3000:] + ranked.stderr[-3000:]
    scores = {Path(row.split(",")[1]).name: float(row.split(",")[2])
              for row in (trained / "other-ranked.csv").read_text().splitlines()[1:]}
    tiers = {f"other_{t.lower()}_{n:03d}.png": "SABC".index(t) for t, count in OTHER_SET.items() for n in range(count)}
    assert set(scores) == set(tiers)
    pairs = [(a, b) for a in tiers for b in tiers if tiers[a] < tiers[b]]
    correct = sum(scores[a] > scores[b] for a, b in pairs)
    near_ties = sum(abs(scores[a] - scores[b]) < 1e-5 for a, b in pairs)  # the CSV keeps six decimals
    assert len(pairs) == 71 and abs(metrics["test/correct_predictions"] - correct) <= near_ties
    gap = [(a, b) for a, b in pairs if (tiers[a], tiers[b]) == (0, 3)]
    assert metrics["test/accuracy/S-C"] == pytest.approx(sum(scores[a] > scores[b] for a, b in gap) / len(gap),
                                                         abs=near_ties / len(gap) + 1e-9)
    from scipy.stats import kendalltau

    names = sorted(tiers)
    tau = kendalltau([scores[n] for n in names], [-tiers[n] for n in names]).statistic
    assert metrics["test/kendall_tau"] == pytest.approx(tau, abs=1e-3)
    # A malformed set: the job refuses it in one line naming the file, the row and the column.
    bad = trained / "bad-labels"
    shutil.copytree(trained / "other", bad)
    (bad / "metadata.csv").write_text((bad / "metadata.csv").read_text().replace("other-B-0,other_b_000.png,B",
                                                                                 "other-B-0,other_b_000.png,Q"))
    refused = launch(trained, "eval", "ranker", "--option", "labels=bad-labels/metadata.csv")
    assert refused.returncode != 0
    assert (f"train.data.test_metadata ({bad / 'metadata.csv'}): row 11: tier 'Q': expected one of S, A, B, C"
            in refused.stdout + refused.stderr)
