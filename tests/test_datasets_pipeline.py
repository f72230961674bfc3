"""read -> split -> fit -> transform: rows of each part, and preprocessing fitted on training rows only."""

import re

import numpy as np
import pytest

from kexp.datasets.base import RawData
from kexp.datasets.pipeline import prepare_dataset, split_rows
from kexp.errors import SpecError
from kexp.preprocessing import TablePreprocessor


def raw_of(y: np.ndarray, class_names: list[str] | None = None, test_fraction: float = 0.0, standardize: bool = False) -> RawData:
    """A one-feature table whose feature is the row number, so parts can be traced back to rows."""
    names = class_names or [f"c{i}" for i in range(int(y.max()) + 1)]
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1)
    return RawData(inputs=x, labels=np.asarray(y, dtype=np.int32), class_names=names, preprocessor=TablePreprocessor(["row"], standardize), test_fraction=test_fraction)


def test_validation_split_is_seeded_shuffled_and_disjoint():
    y = np.arange(100) % 2
    rows = split_rows(raw_of(y), 3, 0.2)
    assert len(rows["validation"]) == 20 and len(rows["train"]) == 80 and len(rows["test"]) == 0
    assert not set(rows["train"]) & set(rows["validation"])
    assert sorted(rows["validation"].tolist()) != list(range(80, 100))  # not Keras' "last rows" hold-out
    assert split_rows(raw_of(y), 3, 0.2)["validation"].tolist() == rows["validation"].tolist()
    assert len(split_rows(raw_of(y), 3, 0.0)["validation"]) == 0


def test_parts_are_disjoint_and_cover_every_row():
    y = np.repeat([0, 1, 2], [40, 30, 30])
    rows = split_rows(raw_of(y, test_fraction=0.2), 5, 0.25)
    together = np.concatenate(list(rows.values()))
    assert sorted(together.tolist()) == list(range(100))
    assert [len(rows[p]) for p in ("train", "validation", "test")] == [60, 20, 20]


def test_standardizer_is_fitted_on_training_rows_only():
    y = np.repeat([0, 1], 50)
    raw = raw_of(y, test_fraction=0.2, standardize=True)
    rows = split_rows(raw, 0, 0.25)
    data = prepare_dataset(raw, rows)
    train_rows = rows["train"].astype(np.float32)
    assert data.preprocessing.mean == pytest.approx([train_rows.mean()])
    assert data.preprocessing.std == pytest.approx([train_rows.std()])
    # the held-out parts are transformed with the training statistics, not their own
    assert data.validation.x.ravel() == pytest.approx((rows["validation"] - train_rows.mean()) / train_rows.std())


def test_validation_split_leaving_no_training_rows_names_the_option():
    y = np.array([0, 0, 1, 1])
    message = "train.validation_split: 0.9 of 4 rows leaves the train split empty; use at most 0.5"
    with pytest.raises(SpecError, match=re.escape(message)) as info:
        split_rows(raw_of(y, ["no", "yes"]), 0, 0.9)
    assert info.value.exit_code == 2


def test_validation_split_leaving_no_validation_rows_names_the_option():
    y = np.arange(20) % 2
    message = "train.validation_split: 0.01 of 20 rows leaves the validation split empty; use at least 0.1, or 0 for no validation split"
    with pytest.raises(SpecError, match=re.escape(message)):
        split_rows(raw_of(y), 0, 0.01)


def test_validation_split_is_stratified_so_every_class_stays_in_both_parts():
    y = np.repeat([0, 1, 2], [90, 5, 5])
    for seed in range(20):
        rows = split_rows(raw_of(y), seed, 0.2)
        y_train, y_val = y[rows["train"]], y[rows["validation"]]
        assert np.bincount(y_val).tolist() == [18, 1, 1]
        assert np.bincount(y_train).tolist() == [72, 4, 4]


def test_validation_split_names_a_class_too_small_to_hold_out():
    y = np.repeat([0, 1], [30, 2])
    message = "train.validation_split: class 'rare' (2 rows) has no row in the validation split at 0.2; use at least 0.5, or 0 for no validation split"
    with pytest.raises(SpecError, match=re.escape(message)):
        split_rows(raw_of(y, ["common", "rare"]), 0, 0.2)




# --- evaluation protocols: members --------------------------------------------------------


def spec_for(protocol: str = "holdout", k: int = 5, repeats: int = 1, seeds=None, validation_split: float = 0.0, split_seed=None):
    from kexp.spec import validate_spec

    raw = {"name": "p", "seed": 3, "data": {"name": "synthetic", "split_seed": split_seed, **({"test_fraction": 0} if protocol == "kfold" else {})}, "model": "mlp",
           "train": {"validation_split": validation_split}, "evaluation": {"protocol": protocol, "k": k, "repeats": repeats}}
    if seeds:
        raw["seeds"] = seeds
    return validate_spec(raw)


def test_kfold_folds_are_stratified_disjoint_and_cover_every_row_once():
    from kexp.datasets.pipeline import plan_members

    y = np.repeat([0, 1, 2], [50, 30, 20])
    members = plan_members(raw_of(y), spec_for("kfold", k=5))
    assert [m.name for m in members] == [f"fold-{i}" for i in range(5)]
    tests = [m.rows["test"] for m in members]
    assert sorted(np.concatenate(tests).tolist()) == list(range(100))  # each row tested exactly once
    for m in members:
        assert not set(m.rows["train"]) & set(m.rows["test"])
        assert np.bincount(y[m.rows["test"]]).tolist() == [10, 6, 4]  # every class keeps its share


def test_kfold_repeats_reshuffle_the_folds():
    from kexp.datasets.pipeline import plan_members

    y = np.repeat([0, 1], 40)
    members = plan_members(raw_of(y), spec_for("kfold", k=4, repeats=2))
    assert len(members) == 8 and members[0].name == "fold-0-0" and members[4].name == "fold-1-0"
    assert sorted(members[0].rows["test"].tolist()) != sorted(members[4].rows["test"].tolist())


def test_each_fold_fits_its_preprocessing_on_its_own_training_rows():
    from kexp.datasets.pipeline import plan_members

    y = np.repeat([0, 1], 30)
    raw = raw_of(y, standardize=True)
    for member in plan_members(raw, spec_for("kfold", k=3, validation_split=0.2)):
        data = prepare_dataset(raw, member.rows)
        train_rows = member.rows["train"].astype(np.float32)  # the feature is the row number
        assert data.preprocessing.mean == pytest.approx([train_rows.mean()])
        assert not set(member.rows["test"]) & set(member.rows["train"]) and not set(member.rows["validation"]) & set(member.rows["train"])


def test_a_class_smaller_than_k_is_an_error_naming_evaluation_k():
    from kexp.datasets.pipeline import plan_members

    y = np.repeat([0, 1], [40, 3])
    with pytest.raises(SpecError, match=re.escape("evaluation.k: class 'c1' has 3 rows, fewer than the 5 folds; set evaluation.k to at most 3")):
        plan_members(raw_of(y), spec_for("kfold", k=5))


def test_repeats_share_the_split_and_differ_in_seed():
    from kexp.datasets.pipeline import plan_members

    y = np.repeat([0, 1], 30)
    members = plan_members(raw_of(y, test_fraction=0.25), spec_for(seeds=[1, 2, 3]))
    assert [(m.name, m.seed) for m in members] == [("seed-1", 1), ("seed-2", 2), ("seed-3", 3)]
    assert all(m.rows["test"].tolist() == members[0].rows["test"].tolist() for m in members)
    other = plan_members(raw_of(y, test_fraction=0.25), spec_for(seeds=[1, 2, 3], split_seed=9))
    assert other[0].rows["test"].tolist() != members[0].rows["test"].tolist()  # data.split_seed moves the split


def test_protocol_train_scores_on_every_row_it_trains_on():
    from kexp.datasets.pipeline import plan_members

    [member] = plan_members(raw_of(np.repeat([0, 1], 10), test_fraction=0.5), spec_for("train"))
    assert member.name is None and len(member.rows["train"]) == 20 and len(member.rows["test"]) == 0
