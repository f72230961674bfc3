"""The helpers every loader shares: the split rule, file descriptions, the missing-file message."""

import re

import numpy as np
import pytest

from kexp import training
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


def test_validation_split_leaving_no_training_rows_names_the_option():
    x, y = np.arange(4).reshape(4, 1), np.array([0, 0, 1, 1])
    message = "train.validation_split: 0.9 of 4 rows leaves the train split empty; use at most 0.5"
    with pytest.raises(SpecError, match=re.escape(message)) as info:
        training.split_validation(x, y, 0.9, seed=0, class_names=["no", "yes"])
    assert info.value.exit_code == 2


def test_validation_split_leaving_no_validation_rows_names_the_option():
    x, y = np.arange(20).reshape(20, 1), np.arange(20) % 2
    message = "train.validation_split: 0.01 of 20 rows leaves the validation split empty; use at least 0.1, or 0 for no validation split"
    with pytest.raises(SpecError, match=re.escape(message)):
        training.split_validation(x, y, 0.01, seed=0)


def test_validation_split_is_stratified_so_every_class_stays_in_both_parts():
    y = np.repeat([0, 1, 2], [90, 5, 5])
    x = np.arange(len(y)).reshape(-1, 1)
    for seed in range(20):
        (_, y_train), (_, y_val) = training.split_validation(x, y, 0.2, seed=seed)
        assert np.bincount(y_val).tolist() == [18, 1, 1]
        assert np.bincount(y_train).tolist() == [72, 4, 4]


def test_validation_split_names_a_class_too_small_to_hold_out():
    y = np.repeat([0, 1], [30, 2])
    x = np.zeros((len(y), 1))
    message = "train.validation_split: class 'rare' (2 rows) has no row in the validation split at 0.2; use at least 0.5, or 0 for no validation split"
    with pytest.raises(SpecError, match=re.escape(message)):
        training.split_validation(x, y, 0.2, seed=0, class_names=["common", "rare"])


def test_describe_files_gives_absolute_paths_and_sizes(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"12345")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"123")
    monkeypatch.chdir(tmp_path)
    assert describe_files([tmp_path / "d" / "a.txt", tmp_path / "d" / "sub" / ".." / "a.txt"]) == [{"path": str(tmp_path / "d" / "a.txt"), "bytes": 5}] * 2
    assert describe_files(["d"]) == [{"path": str(tmp_path / "d"), "bytes": 8}]  # a folder: the files in it


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
