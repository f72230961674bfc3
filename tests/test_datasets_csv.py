import numpy as np
import pytest

from kexp.datasets.csv import CsvOptions, PimaOptions, load_csv, load_pima
from kexp.errors import DataError
from tests.conftest import write_pima_csv


def test_pima_reads_all_rows_as_train(data_dir):
    write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=50)
    data = load_pima(PimaOptions(), data_dir, seed=0)
    assert data.train.x.shape == (50, 8) and data.train.x.dtype == np.float32
    assert data.test is None
    assert data.num_classes == 2 and data.class_names == ["0", "1"]
    assert set(np.unique(data.train.y)) <= {0, 1}


def test_pima_missing_file_says_where_and_how(data_dir):
    with pytest.raises(DataError) as info:
        load_pima(PimaOptions(), data_dir, seed=0)
    message = str(info.value)
    assert str(data_dir / "pima-indians-diabetes.data.csv") in message
    assert "KEXP_DATA_DIR" in message and "kexp data fetch pima" in message


def test_short_row_is_reported_with_line(data_dir):
    path = write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=10)
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 2)[0]
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"pima-indians-diabetes.data.csv:7: expected 9 fields, found 7"):
        load_pima(PimaOptions(), data_dir, seed=0)


def test_non_numeric_feature_is_reported(data_dir):
    path = write_pima_csv(data_dir / "p.csv", rows=5)
    path.write_text(path.read_text().replace(path.read_text().split(",")[0], "abc", 1))
    with pytest.raises(DataError, match=r"p.csv:1: feature value 'abc' is not a number"):
        load_csv(CsvOptions(path="p.csv", header=False), data_dir, seed=0)


def test_csv_with_header_and_string_labels(data_dir):
    rows = ["height,species,weight"] + [f"{i},{'cat' if i % 3 else 'dog'},{i * 2}" for i in range(30)]
    (data_dir / "animals.csv").write_text("\n".join(rows))
    data = load_csv(CsvOptions(path="animals.csv", label_column="species", test_fraction=0.2), data_dir, seed=1)
    assert data.class_names == ["cat", "dog"]
    assert data.input_shape == (2,)
    assert len(data.train) + len(data.test) == 30
    # stratified: both classes appear in the test split
    assert set(data.test.y) == {0, 1}
    assert data.artifacts["features.json"]["feature_names"] == ["height", "weight"]


def test_class_names_fix_the_order_and_reject_unknown_labels(data_dir):
    (data_dir / "a.csv").write_text("1,yes\n2,no\n3,maybe\n")
    with pytest.raises(DataError, match=r"a.csv:3: label 'maybe' is not one of the classes \['no', 'yes'\]"):
        load_csv(CsvOptions(path="a.csv", label_column=1, class_names=["no", "yes"]), data_dir, seed=0)


def test_unknown_label_column_name(data_dir):
    (data_dir / "a.csv").write_text("x,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match="no column named 'label'; columns: x, y"):
        load_csv(CsvOptions(path="a.csv", label_column="label"), data_dir, seed=0)


def test_standardization_is_fitted_on_train_only(data_dir):
    rows = [f"{v},{v % 2}" for v in range(100)]
    (data_dir / "n.csv").write_text("\n".join(rows))
    data = load_csv(CsvOptions(path="n.csv", standardize=True, test_fraction=0.3), data_dir, seed=0)
    assert abs(float(data.train.x.mean())) < 1e-5
    assert abs(float(data.train.x.std()) - 1) < 1e-4
    saved = data.artifacts["features.json"]
    assert len(saved["mean"]) == 1 and saved["mean"][0] != pytest.approx(49.5)  # train mean, not full-file mean


def test_empty_file(data_dir):
    (data_dir / "e.csv").write_text("\n\n")
    with pytest.raises(DataError, match="e.csv: the file is empty"):
        load_csv(CsvOptions(path="e.csv"), data_dir, seed=0)
