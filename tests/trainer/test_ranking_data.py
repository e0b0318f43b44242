"""The ranker's data: metadata.csv checked row by row, the stratified split (a property test), the split kept
with the run, and the pairs of an epoch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spottrain.run_files import RunFiles
from spottrain.tasks.ranking.catalog import read_catalog
from spottrain.tasks.ranking.generated import PER_TIER, ensure_generated
from spottrain.tasks.ranking.pairs import PairCodec, epoch_pairs, labels, tier_gaps
from spottrain.tasks.ranking.split import DataSplit, stratified_split
from spottrain_contract.errors import ConfigurationError
from spottrain_contract.store import open_store


def write_catalog(root: Path, rows: list[str], files=("a.png", "b.png", "c.png")) -> Path:
    images = root / "images"
    images.mkdir(exist_ok=True)
    for name in files:
        (images / name).write_bytes(b"not decoded here")
    metadata = root / "metadata.csv"
    metadata.write_text("\n".join(rows) + "\n")
    return metadata


@pytest.mark.parametrize(("rows", "expected"), [
    (["image_id,filename,tier", "a,a.png,S", "b,b.png,Z"],
     "row 3: tier 'Z': expected one of S, A, B, C"),
    (["image_id,filename,tier", "a,a.png,S", "a,b.png,B"],
     "row 3: image_id 'a' already used in row 2: expected unique ids"),
    (["image_id,filename,tier", "a,a.png,S", "d,d.png,B"],
     "row 3: filename 'd.png': no such file in train.data.image_dir"),
    (["image_id,file,tier", "a,a.png,S"],
     "missing column(s) filename: expected image_id, filename, tier"),
    (["image_id,filename,tier", ",a.png,S"], "row 2: empty image_id"),
], ids=["bad tier", "duplicate id", "missing file", "missing column", "empty id"])
def test_a_bad_metadata_row_is_one_line_naming_file_and_row(tmp_path, rows, expected):
    metadata = write_catalog(tmp_path, rows)
    with pytest.raises(ConfigurationError) as caught:
        read_catalog(metadata, tmp_path / "images")
    message = str(caught.value)
    assert message.startswith(f"train.data.metadata ({metadata}): ") and expected in message
    assert "\n" not in message


def test_the_catalog_reads_ids_paths_and_tiers_best_first(tmp_path):
    metadata = write_catalog(tmp_path, ["image_id,filename,tier", "x,a.png,C", "y,b.png, S", "z,c.png,A"])
    catalog = read_catalog(metadata, tmp_path / "images")
    assert catalog.ids == ("x", "y", "z")
    assert catalog.tiers.tolist() == [3, 0, 1]
    assert catalog.paths[1] == tmp_path / "images" / "b.png"


tier_lists = st.lists(st.integers(0, 3), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None)
@given(tiers=tier_lists, seed=st.integers(0, 2**31 - 1))
def test_the_split_is_stratified_disjoint_complete_and_a_function_of_its_seed(tiers, seed):
    tiers = np.asarray(tiers, dtype=np.int8)
    split = stratified_split(tiers, (0.8, 0.1, 0.1), seed)
    parts = [split.train, split.val, split.test]
    every = np.concatenate(parts)
    assert sorted(every.tolist()) == list(range(len(tiers)))  # disjoint and complete
    for tier in set(tiers.tolist()):
        n = int((tiers == tier).sum())
        for part, fraction in zip(parts, (0.8, 0.1, 0.1)):
            assert abs(int((tiers[part] == tier).sum()) - fraction * n) <= 1  # stratified, to one image
    again = stratified_split(tiers, (0.8, 0.1, 0.1), seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.train, again.val, again.test]))


def test_the_split_is_kept_with_the_run_and_survives_new_rows_in_the_metadata(tmp_path):
    """A resumed attempt, or `launch eval`, reads the split the first attempt stored: rows added to
    metadata.csv since then do not move any image between train, val and test."""
    images = tmp_path / "images"
    metadata = ensure_generated(images)
    files = RunFiles(open_store(str(tmp_path / "store")), "run-1")
    catalog = read_catalog(metadata, images)
    made = files.once("split.json", lambda: stratified_split(catalog.tiers, (0.8, 0.1, 0.1), 42).to_json(catalog))
    lines = metadata.read_text().splitlines()
    grown = tmp_path / "grown.csv"
    grown.write_text("\n".join([lines[0], "new-1,s_000.png,S", *lines[1:]]) + "\n")  # a new first row
    catalog_now = read_catalog(grown, images)
    stored = files.once("split.json", lambda: pytest.fail("the stored split must be read, not remade"))
    assert stored == made
    split = DataSplit.from_json(stored, catalog_now, "split.json")
    ids = lambda part, c: sorted(c.ids[i] for i in part)  # noqa: E731
    original = DataSplit.from_json(made, catalog, "split.json")
    assert ids(split.test, catalog_now) == ids(original.test, catalog)
    assert "new-1" not in {catalog_now.ids[i] for i in np.concatenate([split.train, split.val, split.test])}

    reader = RunFiles(open_store(str(tmp_path / "store")), "run-2", writable=False)
    with pytest.raises(ConfigurationError, match="run run-2 keeps no task/split.json"):
        reader.once("split.json", lambda: b"")


def test_a_stored_split_naming_a_vanished_image_is_an_error(tmp_path):
    images = tmp_path / "images"
    catalog = read_catalog(ensure_generated(images), images)
    stored = stratified_split(catalog.tiers, (0.8, 0.1, 0.1), 42).to_json(catalog).replace(b'"s-000"', b'"gone"')
    with pytest.raises(ConfigurationError, match="names 1 image id\\(s\\) no longer in it, e.g. 'gone'"):
        DataSplit.from_json(stored, catalog, "split.json")


def test_the_pairs_of_an_epoch_are_a_function_of_seed_and_epoch_and_cover_every_gap():
    tiers = np.repeat(np.arange(4, dtype=np.int8), 25)
    members = np.arange(0, 100, 2)
    first, second = epoch_pairs(tiers, members, seed=7, epoch=3, count=600)
    again = epoch_pairs(tiers, members, seed=7, epoch=3, count=600)
    assert np.array_equal(first, again[0]) and np.array_equal(second, again[1])
    other = epoch_pairs(tiers, members, seed=7, epoch=4, count=600)
    assert not np.array_equal(first, other[0])
    assert set(first) | set(second) <= set(members.tolist())
    gaps = Counter(tuple(sorted((int(tiers[a]), int(tiers[b])))) for a, b in zip(first, second))
    assert set(gaps) == set(tier_gaps(tiers, members)) and len(gaps) == 6
    assert set(gaps.values()) == {100}  # an equal share each
    assert (tiers[first] != tiers[second]).all()
    y = labels(tiers, first, second)
    assert ((y == 1) == (tiers[first] < tiers[second])).all()
    assert 0.4 < (y == 1).mean() < 0.6  # the better image first about half the time


def test_without_a_bound_an_epoch_is_every_cross_tier_pair():
    tiers = np.asarray([0, 0, 1, 2, 2, 3], dtype=np.int8)
    first, second = epoch_pairs(tiers, np.arange(6), seed=1, epoch=0, count=None)
    pairs = {frozenset(p) for p in zip(first.tolist(), second.tolist())}
    expected = {frozenset((a, b)) for a in range(6) for b in range(a + 1, 6) if tiers[a] != tiers[b]}
    assert pairs == expected and len(first) == len(expected)


def test_a_pair_index_names_its_epoch_and_images():
    codec = PairCodec(images=1000, epochs=101)
    a, b = np.asarray([0, 999, 5]), np.asarray([999, 0, 6])
    packed = codec.encode(100, a, b)
    epochs, first, second = codec.decode(packed)
    assert epochs.tolist() == [100] * 3 and first.tolist() == a.tolist() and second.tolist() == b.tolist()


def test_the_generated_set_has_every_tier_and_the_same_bytes_each_time(tmp_path):
    one, two = ensure_generated(tmp_path / "one"), ensure_generated(tmp_path / "two")
    catalog = read_catalog(one, tmp_path / "one")
    assert Counter("SABC"[t] for t in catalog.tiers) == {t: PER_TIER for t in "SABC"}
    for path in catalog.paths:
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes()
    assert one.read_bytes() == two.read_bytes()
