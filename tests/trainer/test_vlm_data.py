"""The VLM task's CSV reader: paths relative to the CSV, and every bad row one line naming file, row and column."""

from __future__ import annotations

import pytest

from spottrain.tasks.vlm.data import read_examples
from spottrain_contract.errors import ConfigurationError

COLUMNS = ("url", "instruction", "response")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"png")
    return tmp_path


def test_rows_become_examples_with_images_relative_to_the_csv_or_absolute(folder):
    absolute = folder / "images" / "a.png"
    (folder / "train.csv").write_text(f"url,instruction,response\nimages/a.png,What?,red\n{absolute},Shape?,circle\n")
    examples = read_examples(folder / "train.csv", "train.data.train_csv", COLUMNS)
    assert [(e.image, e.prompt, e.target) for e in examples] == [(absolute, "What?", "red"),
                                                                  (absolute, "Shape?", "circle")]


@pytest.mark.parametrize(("text", "message"), [
    ("url,question,response\nimages/a.png,What?,red\n",
     "missing column(s) instruction: expected url, instruction, response (train.data.*_column), found url, "
     "question, response"),
    ("url,instruction,response\nimages/a.png,What?,red\nimages/b.png,What?,blue\n",
     "row 3: column url: no image at {folder}/images/b.png"),
    ("url,instruction,response\nimages/a.png,,red\n", "row 2: column instruction is empty"),
    ("url,instruction,response\n", "no rows"),
], ids=["missing column", "missing image", "empty cell", "no rows"])
def test_a_bad_csv_is_one_line_naming_the_file_row_and_column(folder, text, message):
    (folder / "train.csv").write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        read_examples(folder / "train.csv", "train.data.train_csv", COLUMNS)
    assert str(raised.value) == f"train.data.train_csv ({folder / 'train.csv'}): {message.format(folder=folder)}"
