"""The preprocessing kinds: registered once by name, saved and loaded as the same JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kexp.errors import RunDirError
from kexp.preprocessing import KINDS, FittedArrays, FittedImageFiles, FittedImages, FittedTable, FittedText, from_document, preprocessing_kind, to_document
from kexp.text import TextOptions


def test_each_kind_is_registered_under_the_name_its_runs_save():
    assert KINDS.names() == ["arrays", "image_files", "images", "table", "text"]
    assert (KINDS.get("table"), KINDS.get("images"), KINDS.get("text"), KINDS.get("arrays"), KINDS.get("image_files")) == (FittedTable, FittedImages, FittedText, FittedArrays, FittedImageFiles)


def test_a_second_kind_of_the_same_name_is_refused():
    with pytest.raises(ValueError, match="preprocessing kind 'table' is already registered by kexp.preprocessing.table"):
        preprocessing_kind("table")(type("Other", (), {}))
    assert KINDS.get("table") is FittedTable


def test_an_unknown_kind_names_the_nearest():
    with pytest.raises(KeyError, match="Unknown preprocessing kind 'tabel'. Did you mean 'table'[?] Available: arrays, image_files, images, table, text"):
        KINDS.get("tabel")


@pytest.mark.parametrize("fitted", [
    FittedTable(["a", "b"], [0.5, 1.0], [2.0, 1.0]),
    FittedImages([28, 28], scale=True, flatten=False),
    FittedImageFiles([32, 24], color_mode="grayscale", scale=False),
    FittedText(TextOptions(encoding="tfidf"), ["good", "bad"], [0.1, 0.2]),
])
def test_a_saved_kind_loads_back_the_same_through_json(fitted):
    document = json.loads(json.dumps(to_document(fitted, "classification", ["no", "yes"], "yes", None)))
    assert document["kind"] == fitted.kind and document["state"] == fitted.state()
    assert from_document(document, "preprocessing.json") == fitted


def test_a_damaged_or_unknown_kind_is_one_line_naming_the_file():
    with pytest.raises(RunDirError, match=r"^p.json: unknown preprocessing kind 'audio'$"):
        from_document({"format": 1, "kind": "audio", "state": {}}, "p.json")
    with pytest.raises(RunDirError, match=r"^p.json: damaged table preprocessing \("):
        from_document({"format": 1, "kind": "table", "state": {"columns": []}}, "p.json")


def test_table_rows_encode_as_training_rows_did():
    fitted = FittedTable(["a", "b"], [1.0, 2.0], [2.0, 4.0])
    rows = np.array([[3.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(fitted.encode(fitted.stack(list(rows))), fitted.transform(rows))
