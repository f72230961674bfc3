"""kexp predict: raw inputs through a run's saved preprocessing and model give the model's own answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli import app
from kexp.reuse.predict import predict_run, write_predictions
from tests.conftest import write_mnist, write_pima_csv, write_spec

pytestmark = pytest.mark.slow

FEATURES = ["f0", "f1", "f2", "f3"]
GOOD = ["great", "lovely", "excellent", "wonderful"]
BAD = ["awful", "terrible", "horrible", "nasty"]
FILLER = ["the", "film", "was", "really", "quite", "food"]


# --- trained runs, one per data kind (module scope: training is the slow part) ---------------


def train(tmp: Path, spec: dict) -> Path:
    runs = tmp / "runs"
    result = CliRunner().invoke(app, ["train", str(write_spec(tmp / f"{spec['name']}.yaml", spec)), "--runs-dir", str(runs), "--data-dir", str(tmp)])
    assert result.exit_code == 0, result.output
    (run,) = [p for p in runs.iterdir() if f"-{spec['name']}-" in p.name]
    return run


@pytest.fixture(scope="module")
def cache_off():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEXP_CACHE_DIR", "none")
        yield


@pytest.fixture(scope="module")
def table_run(tmp_path_factory, cache_off) -> Path:
    """3 classes, header, features far from mean 0 / std 1, so a missing standardization changes answers."""
    tmp = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 4)) + 1.5 * np.eye(3, 4)[y]
    x = x * [10, 5, 1, 30] + [50, -20, 5, 100]
    lines = ["f0,f1,f2,f3,kind"] + [",".join(f"{v:.4f}" for v in row) + f",k{label}" for row, label in zip(x, y)]
    (tmp / "table.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "name": "table", "seed": 0,
        "data": {"name": "csv", "path": "table.csv", "label_column": "kind", "standardize": True, "test_fraction": 0.3},
        "model": {"name": "mlp", "hidden_units": [8]},
        "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.05}},
    }  # fmt: skip
    return train(tmp, spec)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, cache_off) -> Path:
    tmp = tmp_path_factory.mktemp("mnist")
    write_mnist(tmp / "mnist", n_train=30, n_test=10)
    spec = {
        "name": "digits", "seed": 0,
        "data": {"name": "mnist", "limit_train": 20, "limit_test": 10},
        "model": {"name": "mlp", "hidden_units": [8]},
        "train": {"epochs": 1, "batch_size": 10},
    }  # fmt: skip
    return train(tmp, spec)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, cache_off) -> Path:
    """good/bad sentences, binary (one sigmoid unit)."""
    tmp = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for i in range(60):
        label = ["bad", "good"][i % 2]
        words = [*rng.choice(FILLER, 3, replace=False), rng.choice(GOOD if label == "good" else BAD)]
        lines.append(f"{' '.join(rng.permutation(words))},{label}")
    (tmp / "texts.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "name": "text", "seed": 0,
        "data": {"name": "text_csv", "path": "texts.csv", "test_fraction": 0.25, "text": {"num_words": 30, "encoding": "count"}},
        "model": {"name": "mlp", "hidden_units": [8]},
        "train": {"epochs": 3, "batch_size": 8, "optimizer": {"name": "adam", "learning_rate": 0.05}},
    }  # fmt: skip
    return train(tmp, spec)


def model_answers(run: Path, part: str = "test"):
    """(raw data, rows of `part`, model outputs on those rows) the way `kexp train` transformed them."""
    from kexp.datasets.pipeline import prepare_dataset, read_data, split_rows
    from kexp.models.saving import load_model
    from kexp.preprocessing import from_document
    from kexp.run.saved import open_run

    record = open_run(run)
    raw = read_data(record.spec, Path(record.env.data_dir))
    rows = split_rows(raw, record.spec.seed, record.spec.train.validation_split)
    data = prepare_dataset(raw, rows, from_document(record.preprocessing, "test"))
    outputs = load_model(record.model_path).predict(getattr(data, part).x, verbose=0)
    return raw, rows[part], outputs


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def warnings_into(warnings: list[str]):
    """An Emit that keeps the messages of predict's warning events."""

    def emit(kind: str, /, **fields) -> None:
        if kind == "warning":
            warnings.append(fields["message"])

    return emit


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("kexp: error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# --- tables ----------------------------------------------------------------------------------


def write_rows(path: Path, header: list[str] | None, rows: list[list]) -> Path:
    lines = ([",".join(header)] if header else []) + [",".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_table_predictions_equal_the_model_on_the_runs_standardized_rows(table_run, tmp_path):
    raw, rows, outputs = model_answers(table_run)
    path = write_rows(tmp_path / "new.csv", FEATURES, raw.inputs[rows].tolist())
    predicted = predict_run(table_run, [str(path)])
    assert [p["label"] for p in predicted] == [raw.class_names[i] for i in outputs.argmax(axis=1)]
    assert np.allclose([p["probability"] for p in predicted], outputs.max(axis=1), atol=1e-5)
    first = predicted[0]
    assert (first["input"], first["file"], first["line"]) == (path.read_text().splitlines()[1], str(path), 2)


def test_table_csv_with_or_without_header_and_with_a_label_column(table_run, tmp_path):
    raw, rows, outputs = model_answers(table_run)
    x = raw.inputs[rows].tolist()
    expected = [raw.class_names[i] for i in outputs.argmax(axis=1)]
    layouts = {
        "label_inside.csv": (["f0", "f1", "kind", "f2", "f3"], [[*r[:2], "k0", *r[2:]] for r in x]),  # found by name
        "reordered.csv": (["f3", "f2", "f1", "f0"], [r[::-1] for r in x]),
        "bare.csv": (None, x),
    }
    for name, (header, body) in layouts.items():
        predicted = predict_run(table_run, [str(write_rows(tmp_path / name, header, body))])
        assert [p["label"] for p in predicted] == expected, name
    # The run named its label column rather than placing it: one extra column without a header is ambiguous.
    path = write_rows(tmp_path / "bare_label.csv", None, [[*r, "k1"] for r in x])
    assert "bare_label.csv: 5 columns and no header" in one_error_line(invoke(table_run, path))
    partial = write_rows(tmp_path / "partial.csv", ["f0", "f1", "g2", "f3"], x)
    assert "partial.csv:1: the header lacks the run's feature column(s) f2" in one_error_line(invoke(table_run, partial))


def test_a_pima_run_reads_its_own_file_layout_header_less_with_the_label_last(tmp_path, cache_off):
    """Pima's file is 8 features then the 0/1 onset, no header: its rows predict as the features alone do."""
    write_pima_csv(tmp_path / "pima.csv", rows=40)
    run = train(tmp_path, {"name": "pimarun", "seed": 0, "data": {"name": "pima", "path": "pima.csv"},
                           "model": {"name": "mlp", "hidden_units": [4]}, "train": {"epochs": 1, "batch_size": 16}})  # fmt: skip
    features = [line.rsplit(",", 1)[0] for line in (tmp_path / "pima.csv").read_text().splitlines()]
    (tmp_path / "features.csv").write_text("\n".join(features) + "\n")
    expected = [p["label"] for p in predict_run(run, [str(tmp_path / "features.csv")])]
    assert [p["label"] for p in predict_run(run, [str(tmp_path / "pima.csv")])] == expected


def test_header_less_label_column_is_the_one_the_runs_spec_placed(tmp_path, cache_off):
    """A synthetic run (features x0..x3, no label column): a fifth column is taken as the label, last."""
    run = train(tmp_path, {"name": "blobs", "seed": 0, "data": {"name": "synthetic", "samples": 60, "features": 4, "classes": 2},
                           "model": {"name": "mlp", "hidden_units": [4]}, "train": {"epochs": 1, "batch_size": 16}})  # fmt: skip
    raw, rows, outputs = model_answers(run)
    expected = ["class_1" if o[0] > 0.5 else "class_0" for o in outputs]
    with_label = write_rows(tmp_path / "l.csv", None, [[*r, 9] for r in raw.inputs[rows].tolist()])
    assert [p["label"] for p in predict_run(run, [str(with_label)])] == expected
    wrong = write_rows(tmp_path / "w.csv", None, [[1, 2, 3, 4, 5, 6]])
    assert "6 columns" in one_error_line(invoke(run, wrong))


@pytest.mark.parametrize("cell, says", [("abc", "is 'abc', not a number"), ("", "is '', not a number"), ("nan", "is 'nan'; the model needs a finite number")])
def test_a_bad_feature_cell_is_one_line_naming_file_and_line(table_run, tmp_path, cell, says):
    path = write_rows(tmp_path / "bad.csv", FEATURES, [[1, 2, 3, 4], [1, cell, 3, 4]])
    assert f"bad.csv:3: feature 'f1' {says}" in one_error_line(invoke(table_run, path))


def test_top_k_is_ordered_and_softmax_probabilities_sum_to_one(table_run, tmp_path):
    raw, rows, outputs = model_answers(table_run)
    path = write_rows(tmp_path / "new.csv", FEATURES, raw.inputs[rows].tolist())
    predicted = predict_run(table_run, [str(path)], top_k=5)  # 5 > 3 classes: all three
    for row, out in zip(predicted, outputs):
        probabilities = [pair["probability"] for pair in row["top"]]
        assert len(row["top"]) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert abs(sum(probabilities) - 1) < 1e-4
        assert row["top"][0] == {"label": row["label"], "probability": row["probability"]}
        assert {p["label"]: p["probability"] for p in row["top"]} == pytest.approx(dict(zip(raw.class_names, out.tolist())), abs=1e-5)


def test_jsonl_and_csv_outputs_parse_and_json_lines_print(table_run, tmp_path):
    path = write_rows(tmp_path / "new.csv", FEATURES, [[50, -20, 5, 100], [70, -20, 5, 100]])
    result = invoke(table_run, path, "--top-k", 2, "--output", tmp_path / "p.jsonl", "--json")
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    saved = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert printed == saved and len(saved) == 2 and len(saved[0]["top"]) == 2
    assert invoke(table_run, path, "--top-k", 2, "-o", tmp_path / "p.csv").exit_code == 0
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == [r["label"] for r in saved]
    assert set(table[0]) == {"input", "file", "line", "label", "probability", "label_1", "probability_1", "label_2", "probability_2"}
    assert float(table[1]["probability_2"]) == saved[1]["top"][1]["probability"]
    assert "unknown output format '.txt'" in one_error_line(invoke(table_run, path, "-o", tmp_path / "p.txt"))
    with pytest.raises(Exception, match="unknown output format"):
        write_predictions(saved, tmp_path / "p.json")


def test_header_names_match_ignoring_case_and_punctuation_and_a_foreign_header_lists_the_names(table_run, tmp_path):
    raw, rows, outputs = model_answers(table_run)
    expected = [p["label"] for p in predict_run(table_run, [str(write_rows(tmp_path / "a.csv", FEATURES, raw.inputs[rows].tolist()))])]
    spelled = write_rows(tmp_path / "b.csv", ["F0", "f-1", "F_2", " F3 "], raw.inputs[rows].tolist())
    assert [p["label"] for p in predict_run(table_run, [str(spelled)])] == expected
    foreign = write_rows(tmp_path / "c.csv", ["Alpha", "Beta", "Gamma", "Delta"], raw.inputs[rows].tolist())
    line = one_error_line(invoke(table_run, foreign))
    assert "c.csv:1: a header row (Alpha, Beta, Gamma, Delta) that names none of the run's features" in line
    assert "the run's features: f0, f1, f2, f3; header names match ignoring case and punctuation" in line


def test_a_run_that_cannot_encode_raw_input_is_refused(table_run, tmp_path):
    import shutil

    run = shutil.copytree(table_run, tmp_path / "ids-run")
    document = json.loads((run / "preprocessing" / "preprocessing.json").read_text())
    document["raw_input_unsupported"] = "trained on imdb.npz, which holds word ids, not text"
    (run / "preprocessing" / "preprocessing.json").write_text(json.dumps(document))
    line = one_error_line(invoke(run, write_rows(tmp_path / "new.csv", FEATURES, [[1, 2, 3, 4]])))
    assert "cannot predict from raw inputs: trained on imdb.npz, which holds word ids" in line


# --- images ----------------------------------------------------------------------------------


def test_png_npy_and_idx_files_give_the_labels_of_the_idx_rows_they_came_from(mnist_run, tmp_path):
    from PIL import Image

    raw, rows, outputs = model_answers(mnist_run)
    expected = [raw.class_names[i] for i in outputs.argmax(axis=1)]
    images = raw.inputs[rows]
    pngs = []
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(tmp_path / f"digit{i}.png")
        pngs.append(str(tmp_path / f"digit{i}.png"))
    assert [p["label"] for p in predict_run(mnist_run, pngs)] == expected
    np.save(tmp_path / "u8.npy", images)
    np.save(tmp_path / "unit.npy", images.astype(np.float32) / 255)  # floats in [0, 1] are scaled back
    idx = Path(mnist_run.parent.parent / "mnist" / "t10k-images-idx3-ubyte.gz")
    for source in (tmp_path / "u8.npy", tmp_path / "unit.npy", idx):
        predicted = predict_run(mnist_run, [str(source)])
        assert [p["label"] for p in predicted] == expected, source
    assert (predicted[3]["input"], predicted[3]["file"], predicted[3]["line"]) == (str(idx), str(idx), 4)  # rows are 1-based
    np.save(tmp_path / "one.npy", images[4])  # one [28, 28] image
    assert [p["label"] for p in predict_run(mnist_run, [str(tmp_path / "one.npy")])] == expected[4:5]
    np.save(tmp_path / "flat.npy", images.reshape(len(images), -1))  # as a dense model takes them
    np.save(tmp_path / "nhwc.npy", images[..., np.newaxis])  # as a CNN takes them
    for source in (tmp_path / "flat.npy", tmp_path / "nhwc.npy"):
        assert [p["label"] for p in predict_run(mnist_run, [str(source)])] == expected, source


def test_a_larger_image_is_resized_with_a_warning(mnist_run, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((56, 42), np.uint8), mode="L").save(tmp_path / "big.png")
    warnings = []
    (row,) = predict_run(mnist_run, [str(tmp_path / "big.png")], emit=warnings_into(warnings))
    assert (row["input"], row["file"], row["line"]) == (str(tmp_path / "big.png"), str(tmp_path / "big.png"), None)
    assert any("42x56 image resized to the run's 28x28" in w for w in warnings)


def test_an_image_shape_that_cannot_fit_is_one_line_naming_file_and_shapes(mnist_run, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((2, 32, 32), np.uint8))
    line = one_error_line(invoke(mnist_run, tmp_path / "wide.npy"))
    assert "wide.npy: images of shape [2, 32, 32] do not fit the run's 28x28 images" in line
    (tmp_path / "notes.png").write_text("not an image")
    assert "notes.png: not an image Pillow can read" in one_error_line(invoke(mnist_run, tmp_path / "notes.png"))


# --- text ------------------------------------------------------------------------------------


def test_text_lines_and_strings_give_the_models_answers_on_the_runs_rows(text_run, tmp_path):
    raw, rows, outputs = model_answers(text_run)
    texts = [line.rsplit(",", 1)[0] for line in (text_run.parent.parent / "texts.csv").read_text().splitlines()[1:]]
    (tmp_path / "new.txt").write_text("\n".join(texts[i] for i in rows) + "\n\n")
    p_good = outputs[:, 0]  # the sigmoid gives p(class_names[1])
    expected = [raw.class_names[int(p > 0.5)] for p in p_good]
    for source in (str(tmp_path / "new.txt"), f"@{tmp_path / 'new.txt'}"):
        predicted = predict_run(text_run, [source], top_k=2)
        assert [p["label"] for p in predicted] == expected
        assert [r["top"][0]["probability"] + r["top"][1]["probability"] for r in predicted] == pytest.approx([1.0] * len(rows), abs=1e-5)
        assert [dict((t["label"], t["probability"]) for t in r["top"])["good"] for r in predicted] == pytest.approx(p_good.tolist(), abs=1e-5)
    (literal,) = predict_run(text_run, [texts[rows[0]]])
    assert literal == {"input": texts[rows[0]], "file": None, "line": None, "label": expected[0], "probability": predicted[0]["probability"]}


def test_the_table_shows_fifty_rows_and_says_how_many_more(text_run, tmp_path):
    (tmp_path / "many.txt").write_text("".join(f"a lovely film number {i}\n" for i in range(57)))
    result = invoke(text_run, tmp_path / "many.txt", "-o", tmp_path / "many.jsonl")
    assert result.exit_code == 0, result.output
    assert "7 more not shown (all of them are in" in result.stdout and "a lovely film number 49" in result.stdout
    assert "a lovely film number 50" not in result.stdout
    assert len((tmp_path / "many.jsonl").read_text().splitlines()) == 57
    assert "no-such.txt: not found" in one_error_line(invoke(text_run, "@no-such.txt"))


def test_a_regression_run_predicts_values(tmp_path, cache_off):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    (tmp_path / "reg.csv").write_text("a,b,c,y\n" + "".join(f"{r[0]:.3f},{r[1]:.3f},{r[2]:.3f},{r @ [1, 2, -1]:.3f}\n" for r in x))
    run = train(tmp_path, {"name": "reg", "seed": 0, "data": {"name": "csv", "path": "reg.csv", "task": "regression", "test_fraction": 0.25},
                           "model": {"name": "mlp", "hidden_units": [4]}, "train": {"epochs": 1, "batch_size": 8}})  # fmt: skip
    raw, rows, outputs = model_answers(run)
    predicted = predict_run(run, [str(write_rows(tmp_path / "new.csv", ["a", "b", "c", "y"], [[*r, 0] for r in raw.inputs[rows].tolist()]))])
    assert set(predicted[0]) == {"input", "file", "line", "value"}
    assert [p["value"] for p in predicted] == pytest.approx(outputs[:, 0].tolist(), abs=1e-5)


def test_a_fresh_process_tokenizes_in_a_worker_and_gives_the_same_answers(text_run, tmp_path):
    """`kexp predict` in a new process overlaps tokenizing with TensorFlow's start (a forked worker)."""
    import os
    import subprocess
    import sys

    lines = [f"the {word} food was {word} {i}" for i in range(5) for word in GOOD[:2] + BAD[:2]]
    (tmp_path / "new.txt").write_text("\n".join(lines) + "\n")
    expected = predict_run(text_run, [str(tmp_path / "new.txt")])
    env = {**os.environ, "KEXP_CACHE_DIR": "none"}
    result = subprocess.run([sys.executable, "-m", "kexp", "predict", str(text_run), f"@{tmp_path / 'new.txt'}", "--json"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == expected


def test_file_like_text_inputs_are_files_never_predicted_as_their_names(text_run, tmp_path):
    line = one_error_line(invoke(text_run, tmp_path / "missing.txt"))
    assert "missing.txt: not found (an input ending like a file name is read as a file" in line
    (tmp_path / "rows.csv").write_text("id,text\n1,good\n")
    assert "rows.csv: a text run reads plain text, one example per line" in one_error_line(invoke(text_run, tmp_path / "rows.csv"))


def test_blank_lines_are_skipped_with_a_warning_and_inputs_keep_their_line_numbers(text_run, tmp_path):
    (tmp_path / "m.txt").write_text("\ufeffgood film\n\nbad film\n   \n", encoding="utf-8")
    warnings: list[str] = []
    rows = predict_run(text_run, [str(tmp_path / "m.txt")], emit=warnings_into(warnings))
    assert [(r["input"], r["line"]) for r in rows] == [("good film", 1), ("bad film", 3)]  # the byte-order mark is gone
    assert any("skipped 2 blank line(s)" in w for w in warnings)


def test_machine_output_keeps_each_input_whole_with_its_file_and_line(text_run, tmp_path):
    long_line = "a lovely, lovely film, " * 12 + "with a comma, and \"quotes\""
    (tmp_path / "long.txt").write_text(f"good food\n{long_line}\n")
    literal = "bad food, " * 10
    printed = invoke(text_run, tmp_path / "long.txt", literal, "--json")
    assert printed.exit_code == 0, printed.output
    rows = [json.loads(line) for line in printed.stdout.splitlines()]
    expected = [("good food", str(tmp_path / "long.txt"), 1), (long_line, str(tmp_path / "long.txt"), 2), (literal, None, None)]
    assert [(r["input"], r["file"], r["line"]) for r in rows] == expected
    assert invoke(text_run, tmp_path / "long.txt", literal, "-o", tmp_path / "p.jsonl").exit_code == 0
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == rows
    table = invoke(text_run, tmp_path / "long.txt", literal, "-o", tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert [(r["input"], r["file"], r["line"]) for r in saved] == [(i, f or "", "" if n is None else str(n)) for i, f, n in expected]
    assert "long.txt:2 a lovely" in table.stdout and long_line not in table.stdout  # only the terminal shortens


def traced_peak_mb(run: Path, source: Path) -> float:
    """Peak Python/NumPy memory (tracemalloc) while every prediction for `source` is made and dropped."""
    import gc
    import tracemalloc

    from kexp.reuse.predict import predict_batches

    gc.collect()
    tracemalloc.start()
    try:
        count = sum(len(rows) for rows in predict_batches(run, [str(source)]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count > 0
    return peak / 1e6


@pytest.mark.parametrize("kind", ["text", "table", "npy"])
def test_predict_memory_does_not_grow_with_the_input(kind, text_run, table_run, mnist_run, tmp_path):
    """Streaming: 4x the input costs no more memory (the pre-streaming code held every example and row)."""
    rng = np.random.default_rng(0)

    def write(n: int) -> tuple[Path, Path]:
        if kind == "text":
            path = tmp_path / f"{n}.txt"
            path.write_text("".join(f"the {GOOD[i % 4]} food was {BAD[i % 3]} really number {i}\n" for i in range(n)))
            return text_run, path
        if kind == "table":
            return table_run, write_rows(tmp_path / f"{n}.csv", FEATURES, np.round(rng.normal(size=(n, 4)) * 10, 3).tolist())
        np.save(tmp_path / f"{n}.npy", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        return mnist_run, tmp_path / f"{n}.npy"

    small, large = traced_peak_mb(*write(5_000)), traced_peak_mb(*write(20_000))
    assert large < small * 1.3 + 2, f"peak {small:.1f} MB for 5,000 examples, {large:.1f} MB for 20,000"
    assert large < 64, f"peak {large:.1f} MB for 20,000 examples (cap 64 MB)"


def test_the_terminal_table_marks_a_shortened_input_with_an_ellipsis():
    from kexp.reuse.predict import EXCERPT_CHARS, shown_input

    long_text = "call " + "0906170146" * 20
    shown = shown_input({"input": long_text, "file": "/x/msgs.txt", "line": 3})
    assert shown.startswith("msgs.txt:3 call 0906") and shown.endswith("…") and len(shown) == len("msgs.txt:3 ") + EXCERPT_CHARS
    assert shown_input({"input": "see you at lunch", "file": None, "line": None}) == "see you at lunch"  # short: as written
