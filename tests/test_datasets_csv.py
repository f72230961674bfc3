import hashlib
import re

import numpy as np
import pytest
from pydantic import ValidationError

from kexp.datasets.csv import CsvOptions, PimaOptions, load_csv, load_pima
from kexp.errors import DataError, SpecError
from tests.conftest import prepared, write_pima_csv


def test_pima_reads_all_rows_as_train(data_dir):
    write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=50)
    data = prepared(load_pima, PimaOptions(), data_dir, seed=0)
    assert data.train.x.shape == (50, 8) and data.train.x.dtype == np.float32
    assert data.test is None
    assert data.num_classes == 2 and data.class_names == ["0", "1"]
    assert set(np.unique(data.train.y)) <= {0, 1}


KAGGLE_PIMA_HEADER = "Pregnancies,Glucose,BloodPressure,SkinThickness,Insulin,BMI,DiabetesPedigreeFunction,Age,Outcome"


def test_pima_with_kaggles_header_reads_the_same_rows(data_dir):
    plain = write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=50)
    (data_dir / "diabetes.csv").write_text(KAGGLE_PIMA_HEADER + "\n" + plain.read_text())
    expected = prepared(load_pima, PimaOptions(), data_dir, seed=0)
    kaggle = prepared(load_pima, PimaOptions(path="diabetes.csv"), data_dir, seed=0)
    assert np.array_equal(kaggle.train.x, expected.train.x) and np.array_equal(kaggle.train.y, expected.train.y)
    # columns in another order are found by name
    rows = [line.split(",") for line in (data_dir / "diabetes.csv").read_text().splitlines()]
    order = [7, 0, 1, 2, 3, 4, 5, 6, 8]
    (data_dir / "shuffled.csv").write_text("".join(",".join(row[i] for i in order) + "\n" for row in rows))
    assert np.array_equal(prepared(load_pima, PimaOptions(path="shuffled.csv"), data_dir, seed=0).train.x, expected.train.x)


def test_a_pima_header_that_misses_a_feature_lists_the_expected_names(data_dir):
    plain = write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=20)
    (data_dir / "d.csv").write_text(KAGGLE_PIMA_HEADER.replace("BMI", "MassIndex") + "\n" + plain.read_text())
    with pytest.raises(DataError, match=r"d.csv:1: the header names no column for bmi; expected the features pregnancies, glucose, blood_pressure"):
        prepared(load_pima, PimaOptions(path="d.csv"), data_dir, seed=0)


def test_pima_missing_file_says_where_and_how(data_dir):
    with pytest.raises(DataError) as info:
        prepared(load_pima, PimaOptions(), data_dir, seed=0)
    message = str(info.value)
    assert str(data_dir / "pima-indians-diabetes.data.csv") in message
    assert "KEXP_DATA_DIR" in message and "kexp data fetch pima" in message


def test_short_row_is_reported_with_line(data_dir):
    path = write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=10)
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 2)[0]
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"pima-indians-diabetes.data.csv:7: expected 9 fields, found 7"):
        prepared(load_pima, PimaOptions(), data_dir, seed=0)


def test_non_numeric_feature_is_reported(data_dir):
    path = write_pima_csv(data_dir / "p.csv", rows=5)
    path.write_text(path.read_text().replace(path.read_text().split(",")[0], "abc", 1))
    with pytest.raises(DataError, match=r"p.csv:1: feature value 'abc' is not a number"):
        prepared(load_csv, CsvOptions(path="p.csv", header=False), data_dir, seed=0)


def test_csv_with_header_and_string_labels(data_dir):
    rows = ["height,species,weight"] + [f"{i},{'cat' if i % 3 else 'dog'},{i * 2}" for i in range(30)]
    (data_dir / "animals.csv").write_text("\n".join(rows))
    data = prepared(load_csv, CsvOptions(path="animals.csv", label_column="species", test_fraction=0.2), data_dir, seed=1)
    assert data.class_names == ["cat", "dog"]
    assert data.input_shape == (2,)
    assert len(data.train) + len(data.test) == 30
    # stratified: both classes appear in the test split
    assert set(data.test.y) == {0, 1}
    assert data.preprocessing.feature_names == ["height", "weight"]
    assert data.summary["header"] == {"option": "auto", "detected": True, "reason": "label_column 'species' is a column name"}


def test_class_names_fix_the_order_and_reject_unknown_labels(data_dir):
    (data_dir / "a.csv").write_text("1,yes\n2,no\n3,maybe\n")
    with pytest.raises(DataError, match=r"a.csv:3: label 'maybe' is not one of the classes \['no', 'yes'\]"):
        prepared(load_csv, CsvOptions(path="a.csv", label_column=1, class_names=["no", "yes"]), data_dir, seed=0)


def test_unknown_label_column_name(data_dir):
    (data_dir / "a.csv").write_text("x,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match="no column named 'label'; columns: x, y"):
        prepared(load_csv, CsvOptions(path="a.csv", label_column="label"), data_dir, seed=0)


def test_standardization_is_fitted_on_train_only(data_dir):
    rows = [f"{v},{v % 2}" for v in range(100)]
    (data_dir / "n.csv").write_text("\n".join(rows))
    data = prepared(load_csv, CsvOptions(path="n.csv", standardize=True, test_fraction=0.3), data_dir, seed=0)
    assert abs(float(data.train.x.mean())) < 1e-5
    assert abs(float(data.train.x.std()) - 1) < 1e-4
    saved = data.preprocessing.state()
    assert len(saved["mean"]) == 1 and saved["mean"][0] != pytest.approx(49.5)  # train mean, not full-file mean


def test_empty_file(data_dir):
    (data_dir / "e.csv").write_text("\n\n")
    with pytest.raises(DataError, match="e.csv: the file is empty"):
        prepared(load_csv, CsvOptions(path="e.csv"), data_dir, seed=0)


IRIS = ["5.1,3.5,1.4,0.2,Iris-setosa", "7.0,3.2,4.7,1.4,Iris-versicolor", "6.3,3.3,6.0,2.5,Iris-virginica"]


def write_iris(path, header: str | None = None, repeat: int = 10):
    path.write_text("\n".join(([header] if header else []) + IRIS * repeat) + "\n")
    return path


def test_header_auto_reads_a_headerless_file_with_text_labels_as_data(data_dir):
    write_iris(data_dir / "iris.csv")
    data = prepared(load_csv, CsvOptions(path="iris.csv"), data_dir, seed=0)
    assert len(data.train) == 30  # the first row is a flower, not a header
    assert data.train.x[0].tolist() == pytest.approx([5.1, 3.5, 1.4, 0.2])
    assert data.summary["header"] == {"option": "auto", "detected": False, "reason": "first row's feature columns are all numbers"}


def test_header_auto_finds_a_header_from_the_feature_columns(data_dir):
    write_iris(data_dir / "iris.csv", header="sepal_length,sepal_width,petal_length,petal_width,species")
    data = prepared(load_csv, CsvOptions(path="iris.csv", label_column=4), data_dir, seed=0)
    assert len(data.train) == 30 and data.preprocessing.feature_names[0] == "sepal_length"
    assert data.summary["header"]["detected"] is True and "sepal_length" in data.summary["header"]["reason"]


@pytest.mark.parametrize("missing", ["nan", "", "NA", "null", "None", "#N/A"])
def test_missing_label_is_an_error_with_file_and_line(data_dir, missing):
    write_iris(data_dir / "iris.csv", header="a,b,c,d,species", repeat=2)
    lines = (data_dir / "iris.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + "," + missing
    (data_dir / "iris.csv").write_text("\n".join(lines))
    message = f"iris.csv:4: missing label ('{missing}') in column 'species'; fix the file or drop the row"
    with pytest.raises(DataError, match=re.escape(message)):
        prepared(load_csv, CsvOptions(path="iris.csv"), data_dir, seed=0)


def test_missing_numeric_label_names_the_column_index(data_dir):
    (data_dir / "n.csv").write_text("1,0\n2,1\n3,nan\n")
    with pytest.raises(DataError, match=re.escape("n.csv:3: missing label ('nan') in column 1;")):
        prepared(load_csv, CsvOptions(path="n.csv"), data_dir, seed=0)


def test_a_missing_value_spelling_listed_in_class_names_is_a_class(data_dir):
    (data_dir / "a.csv").write_text("1,None\n2,some\n3,None\n4,some\n")
    data = prepared(load_csv, CsvOptions(path="a.csv", class_names=["None", "some"]), data_dir, seed=0)
    assert data.train.y.tolist() == [0, 1, 0, 1]


def test_class_names_given_as_numbers_are_labels(data_dir):
    options = CsvOptions.model_validate({"path": "p.csv", "class_names": [0, 1]})
    assert options.class_names == ["0", "1"] and options.static_num_classes() == 2
    assert CsvOptions(path="p.csv").static_num_classes() is None
    with pytest.raises(ValidationError):
        CsvOptions.model_validate({"path": "p.csv", "class_names": [True, False]})


def test_test_fraction_too_small_for_the_data_names_the_option(data_dir):
    write_pima_csv(data_dir / "p.csv", rows=60)
    message = "data.test_fraction: 0.005 of 60 rows leaves the test split empty; use at least 0.017, or 0 for no test split"
    with pytest.raises(SpecError, match=re.escape(message)) as info:
        prepared(load_csv, CsvOptions(path="p.csv", test_fraction=0.005, stratify=False), data_dir, seed=0)
    assert info.value.exit_code == 2 and len(info.value.problems) == 1


def test_a_tiny_class_without_a_test_row_names_the_option(data_dir):
    rows = [f"{i},{'virginica' if i < 2 else 'setosa'}" for i in range(60)]
    (data_dir / "t.csv").write_text("\n".join(rows))
    message = "data.test_fraction: class 'virginica' (2 rows) has no row in the test split at 0.2; use at least 0.5"
    with pytest.raises(SpecError, match=re.escape(message)):
        prepared(load_csv, CsvOptions(path="t.csv", test_fraction=0.2), data_dir, seed=0)


def test_summary_files_are_absolute_with_sizes(data_dir, monkeypatch):
    path = write_pima_csv(data_dir / "pima-indians-diabetes.data.csv", rows=20)
    monkeypatch.chdir(data_dir.parent)
    data = prepared(load_pima, PimaOptions(), data_dir.relative_to(data_dir.parent), seed=0)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.summary["files"] == [{"path": str(path.absolute()), "bytes": path.stat().st_size, "sha256": sha}]


def test_csv_missing_file_does_not_suggest_a_download(data_dir):
    with pytest.raises(DataError) as info:
        prepared(load_csv, CsvOptions(path="mine.csv"), data_dir, seed=0)
    assert str(data_dir / "mine.csv") in str(info.value) and "KEXP_DATA_DIR" in str(info.value)
    assert "kexp data fetch" not in str(info.value)


def test_latin1_file_names_the_line_and_the_fix(data_dir):
    (data_dir / "l.csv").write_bytes(b"1,2,a\n3,4,b\n5,6,caf\xe9\n")
    with pytest.raises(DataError, match=r"l.csv:3: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        prepared(load_csv, CsvOptions(path="l.csv"), data_dir)


def test_one_column_suggests_the_delimiter(data_dir):
    (data_dir / "s.csv").write_text("1;2;a\n3;4;b\n")
    with pytest.raises(DataError, match=r"found 1 column\(s\); is the delimiter ';'\? set data.delimiter"):
        prepared(load_csv, CsvOptions(path="s.csv"), data_dir)


def test_duplicate_class_names_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="class_names lists 'yes' more than once"):
        CsvOptions(path="x.csv", class_names=["yes", "yes"])
