"""The helpers every loader shares: the split rule, file descriptions, the missing-file message."""

import hashlib
import re

import numpy as np
import pytest

from kexp.datasets.base import check_split, describe_files, find_file, split_indices
from kexp.errors import DataError, SpecError
from kexp.registry import DATASETS


def split_problem(labels: np.ndarray, fraction: float, stratify: bool = True, seed: int = 0) -> str | None:
    """The message check_split gives for split_indices' split of `labels`, or None."""
    train, test = split_indices(labels, fraction, seed, stratify)
    names = [f"c{i}" for i in range(int(labels.max()) + 1)]
    try:
        check_split(labels[train], labels[test], names, "data.test_fraction", fraction, stratified=stratify, zero_allowed=True)
    except SpecError as exc:
        return exc.problems[0]
    return None


@pytest.mark.parametrize("counts", [[60], [30, 30], [97, 3], [7, 5, 2], [1000, 2]])
@pytest.mark.parametrize("stratify", [True, False])
def test_the_suggested_fraction_fixes_the_split(counts, stratify):
    labels = np.repeat(np.arange(len(counts)), counts)
    for fraction in (0.0001, 0.999):
        problem = split_problem(labels, fraction, stratify)
        assert problem and problem.startswith("data.test_fraction: ")
        suggested = re.search(r"use at (?:least|most) ([\d.]+)", problem)
        if suggested:
            after = split_problem(labels, float(suggested.group(1)), stratify)
            # Stratified, the suggestion fixes the split; otherwise which rows go where is
            # chance, and only the empty part is sure to be fixed.
            assert after is None if stratify else "split empty" not in (after or ""), (problem, after)


def test_a_fraction_of_zero_asks_for_no_held_out_part():
    labels = np.array([0, 1, 0, 1])
    check_split(labels, labels[:0], ["a", "b"], "data.test_fraction", 0.0)


def test_describe_files_gives_absolute_paths_and_sizes(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"12345")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"123")
    monkeypatch.chdir(tmp_path)
    five = {"path": str(tmp_path / "d" / "a.txt"), "bytes": 5, "sha256": hashlib.sha256(b"12345").hexdigest()}
    assert describe_files([tmp_path / "d" / "a.txt", tmp_path / "d" / "sub" / ".." / "a.txt"]) == [five] * 2
    [folder] = describe_files(["d"])
    assert folder["path"] == str(tmp_path / "d") and folder["bytes"] == 8  # a folder: the files in it
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"124")  # same size, other content
    assert describe_files(["d"])[0]["sha256"] != folder["sha256"]


@pytest.mark.parametrize("dataset, suggests_fetch", [("csv", False), ("text_csv", False), ("pima", True), ("sms_spam", True)])
def test_missing_file_suggests_a_download_only_where_there_is_one(tmp_path, dataset, suggests_fetch):
    with pytest.raises(DataError) as info:
        find_file(tmp_path, ["x.csv"], dataset)
    message = str(info.value)
    assert str(tmp_path / "x.csv") in message and "KEXP_DATA_DIR" in message
    assert ("kexp data fetch" in message) == suggests_fetch
    assert ("kexp data fetch " + dataset in message) == suggests_fetch


@pytest.mark.parametrize(
    "name, options, count",
    [
        ("mnist", {}, 10),
        ("imdb", {}, 2),
        ("sms_spam", {}, 2),
        ("pima", {}, 2),
        ("synthetic", {"classes": 5}, 5),
        ("csv", {"path": "a.csv"}, None),
        ("csv", {"path": "a.csv", "class_names": ["a", "b", "c"]}, 3),
        ("text_csv", {"path": "a.csv"}, None),
        ("text_csv", {"path": "a.csv", "class_names": [0, 1, 2, 3]}, 4),
    ],
)
def test_class_count_is_known_before_reading_where_the_options_fix_it(name, options, count):
    assert DATASETS.get(name).options.model_validate(options).static_num_classes() == count
