"""The ranker's pieces on CPU: the pairwise losses, the report computed from scores, the feature cache, the
model's two input paths and prediction's three forms."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from spottrain.runtime import Ranks
from spottrain.tasks.ranking.catalog import read_catalog
from spottrain.tasks.ranking.features import FeatureCache
from spottrain.tasks.ranking.generated import ensure_generated
from spottrain.tasks.ranking.images import image_processor, load_rgb, pixels
from spottrain.tasks.ranking.metrics import ranking_report
from spottrain.tasks.ranking.model import PairwiseRanker, RankerHead, build_backbone, feature_size, pair_loss
from spottrain.tasks.ranking.predict import predict
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.ranking import RankerModel


def test_the_logistic_and_margin_losses_on_score_differences():
    differences = torch.tensor([2.0, -1.0, 0.0])
    y = torch.tensor([1.0, 1.0, -1.0])
    logistic = pair_loss(differences, y, "logistic", 1.0)
    assert torch.allclose(logistic, -torch.nn.functional.logsigmoid(y * differences))
    assert logistic[0].item() == pytest.approx(math.log1p(math.exp(-2.0)))
    margin = pair_loss(differences, y, "margin", 1.0)
    assert margin.tolist() == [0.0, 2.0, 1.0]


def test_the_report_from_scores_counts_pairs_gaps_and_kendall_tau():
    tiers = np.asarray([0, 1, 2, 3], dtype=np.int8)  # S, A, B, C
    first, second = np.triu_indices(4, k=1)
    ordered = ranking_report(torch.tensor([4.0, 3.0, 2.0, 1.0]), tiers, first, second, "logistic", 1.0, "test")
    assert ordered["test/accuracy"] == 1.0 and ordered["test/kendall_tau"] == pytest.approx(1.0)
    assert ordered["test/total_pairs"] == 6 and ordered["test/correct_predictions"] == 6
    assert {k for k in ordered if k.startswith("test/accuracy/")} == {
        f"test/accuracy/{g}" for g in ("S-A", "S-B", "S-C", "A-B", "A-C", "B-C")}
    # A and B swapped: only the A–B pair is wrong; τ = (5 − 1) / 6
    swapped = ranking_report(torch.tensor([4.0, 2.0, 3.0, 1.0]), tiers, first, second, "logistic", 1.0, "test")
    assert swapped["test/correct_predictions"] == 5 and swapped["test/accuracy/A-B"] == 0.0
    assert swapped["test/accuracy/S-C"] == 1.0 and swapped["test/kendall_tau"] == pytest.approx(4 / 6)
    tie = ranking_report(torch.zeros(4), tiers, first, second, "logistic", 1.0, "val")
    assert tie["val/accuracy"] == 0.0 and tie["val/loss"] == pytest.approx(math.log(2))  # a tie orders nothing


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    return read_catalog(ensure_generated(root), root)


def tiny_ranker(seed: int = 0, frozen: bool = True) -> PairwiseRanker:
    options = RankerModel(backbone="tiny", image_size=64, freeze_backbone=frozen)
    backbone = build_backbone(options, seed)
    torch.manual_seed(seed)
    return PairwiseRanker(backbone, RankerHead(feature_size(backbone), 16, 0.1), frozen)


def test_a_frozen_backbone_stays_in_eval_mode_without_gradients_and_both_inputs_score_alike(images):
    ranker = tiny_ranker().train()
    assert not ranker.backbone.training and ranker.head.training
    x = pixels(image_processor(64), images.paths[:4])
    scores = ranker.eval()(pixel_values=x)
    assert torch.allclose(scores, ranker(features=ranker.features(x)), atol=1e-6)
    ranker.train()
    ranker(pixel_values=x).sum().backward()
    assert all(p.grad is None for p in ranker.backbone.parameters())
    assert all(p.grad is not None for p in ranker.head.parameters())


def test_features_are_computed_once_per_image_content(images, tmp_path):
    ranker, processor = tiny_ranker().eval(), image_processor(64)
    computed: list[str] = []

    def compute(paths):
        computed.extend(p.name for p in paths)
        with torch.no_grad():
            return ranker.features(pixels(processor, paths))

    paths = list(images.paths[:10])
    first = FeatureCache(tmp_path, "sig", Ranks(0, 0, 1)).features(paths, compute, batch=4)
    assert len(computed) == 10
    direct = compute(paths)
    assert torch.equal(first, direct.float())
    computed.clear()
    again = FeatureCache(tmp_path, "sig", Ranks(0, 0, 1)).features(paths, compute, batch=4)  # a restarted attempt
    assert computed == [] and torch.equal(again, first)
    renamed = tmp_path / "copy-of-first.png"
    shutil.copy(paths[0], renamed)
    edited = tmp_path / "edited.png"
    load_rgb(paths[1]).rotate(90).save(edited)
    more = FeatureCache(tmp_path, "sig", Ranks(0, 0, 1)).features([*paths, renamed, edited], compute, batch=4)
    assert computed == ["edited.png"]  # same bytes under another name: cached; new bytes: computed
    assert torch.equal(more[10], first[0])
    computed.clear()
    FeatureCache(tmp_path, "other-preprocessing", Ranks(0, 0, 1)).features(paths[:2], compute, batch=4)
    assert len(computed) == 2


def brightness(paths) -> torch.Tensor:
    return torch.tensor([float(np.asarray(load_rgb(p)).mean()) for p in paths])


def test_predict_two_images_names_the_winner_and_the_difference(images):
    dark, bright = images.paths[-1], images.paths[0]  # c_039 (grainy, dark) and s_000
    text = predict(brightness, [str(dark), str(bright)], None)
    lines = text.splitlines()
    assert lines[0] == f"winner: {bright}"
    b = brightness([dark, bright])
    assert lines[1] == f"score difference: {abs(b[1] - b[0]).item():.4f}"


def test_predict_a_csv_of_pairs_gives_jsonl_in_order(images, tmp_path):
    names = [p.name for p in images.paths]
    (tmp_path / "pairs.csv").write_text(f"image1,image2\n{images.paths[0]},{images.paths[-1]}\n"
                                        f"{images.paths[-2]},{images.paths[1]}\n")
    out = tmp_path / "out" / "results.jsonl"
    rows = [json.loads(line) for line in predict(brightness, [str(tmp_path / "pairs.csv")], out).splitlines()]
    assert out.read_text().splitlines() == [json.dumps(r) for r in rows]
    assert [r["winner"] for r in rows] == ["image1", "image2"]
    assert rows[0]["confidence"] == pytest.approx(abs(rows[0]["score1"] - rows[0]["score2"]))
    assert names[0] in rows[0]["image1"]


def test_predict_a_folder_ranks_its_images_best_first(images, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in (images.paths[0], images.paths[50], images.paths[150]):
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not an image")
    lines = predict(brightness, [str(folder)], None).splitlines()
    assert lines[0] == "rank,path,score"
    scores = [float(line.split(",")[2]) for line in lines[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("inputs", "expected"), [
    (["nowhere.png", "also-nowhere.png"], "predict: nowhere.png: no such file or folder"),
    (["{a}"], "predict: expected IMAGE_A IMAGE_B, a CSV of pairs (image1,image2) or a folder of images"),
])
def test_predict_refuses_what_it_cannot_read_in_one_line(images, inputs, expected):
    inputs = [i.format(a=images.paths[0]) for i in inputs]
    with pytest.raises(ConfigurationError) as caught:
        predict(brightness, inputs, None)
    assert str(caught.value).startswith(expected)


def labelled_csv(root, rows, files=("a.png", "b.png")):
    root.mkdir(exist_ok=True)
    for name in files:
        (root / name).write_bytes(b"not decoded here")
    (root / "metadata.csv").write_text("\n".join(["image_id,filename,tier", *rows]) + "\n")
    return root / "metadata.csv"


def test_another_labelled_set_is_read_like_metadata_its_files_beside_it_or_in_test_image_dir(tmp_path):
    from spottrain.tasks.ranking.task import PairwiseRankingTask
    from spottrain_contract.ranking import RankingData

    def read(**settings):
        return PairwiseRankingTask._labelled_set(RankingData(metadata="m.csv", image_dir="i", **settings))

    assert read() is None  # the run's stored test split
    metadata = labelled_csv(tmp_path / "other", ["x,a.png,C", "y,b.png,S"])
    labelled = read(test_metadata=str(metadata))
    assert labelled.ids == ("x", "y") and labelled.tiers.tolist() == [3, 0]
    assert labelled.paths[0] == tmp_path / "other" / "a.png"
    elsewhere = labelled_csv(tmp_path / "csv-only", ["x,a.png,C", "y,b.png,S"], files=())
    moved = read(test_metadata=str(elsewhere), test_image_dir=str(tmp_path / "other"))
    assert moved.paths[1] == metadata.parent / "b.png"


@pytest.mark.parametrize(("rows", "image_dir", "expected"), [
    (["x,a.png,C", "y,b.png,Z"], None, "row 3: tier 'Z': expected one of S, A, B, C"),
    (["x,a.png,C", "y,c.png,S"], None, "row 3: filename 'c.png': no such file in the CSV's directory ({dir})"),
    (["x,a.png,C", "y,c.png,S"], "elsewhere",
     "row 3: filename 'c.png': no such file in train.data.test_image_dir ({dir})"),
    (["x,a.png,C", "y,b.png,C"], None, "every row has tier C: pairs need images of at least two tiers"),
], ids=["bad tier", "missing file beside it", "missing file in test_image_dir", "one tier"])
def test_a_bad_labelled_set_is_one_line_naming_the_file_the_row_and_the_column(tmp_path, rows, image_dir, expected):
    from spottrain.tasks.ranking.task import PairwiseRankingTask
    from spottrain_contract.ranking import RankingData

    metadata = labelled_csv(tmp_path / "other", rows)
    where = tmp_path / image_dir if image_dir else metadata.parent
    where.mkdir(exist_ok=True)
    (where / "a.png").write_bytes(b"not decoded here")
    data = RankingData(metadata="m.csv", image_dir="i", test_metadata=str(metadata),
                       test_image_dir=str(where) if image_dir else None)
    with pytest.raises(ConfigurationError) as caught:
        PairwiseRankingTask._labelled_set(data)
    message = str(caught.value)
    assert message == f"train.data.test_metadata ({metadata}): {expected.format(dir=where)}"


def test_a_missing_labelled_set_is_one_line_and_test_image_dir_needs_one(tmp_path):
    from pydantic import ValidationError

    from spottrain.tasks.ranking.task import PairwiseRankingTask
    from spottrain_contract.ranking import RankingData

    missing = tmp_path / "nowhere.csv"
    with pytest.raises(ConfigurationError, match=rf"^train\.data\.test_metadata \({missing}\): cannot read it: "):
        PairwiseRankingTask._labelled_set(RankingData(metadata="m.csv", image_dir="i", test_metadata=str(missing)))
    with pytest.raises(ValidationError, match="expected test_metadata too"):
        RankingData(metadata="m.csv", image_dir="i", test_image_dir=str(tmp_path))


def test_labels_is_a_job_option_of_the_ranker_setting_its_test_set():
    from spottrain_contract.tasks import job_option_overrides

    overrides = job_option_overrides("pairwise_ranking", {"labels": "other/metadata.csv", "labels_images": "imgs"},
                                     lambda name, path: f"/abs/{path}")
    assert overrides == ['train.data.test_metadata="/abs/other/metadata.csv"',
                         'train.data.test_image_dir="/abs/imgs"']
