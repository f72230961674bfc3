"""The imdb, sms_spam and text_csv readers on small generated files, through the data pipeline."""

import io
import re
import tarfile

import numpy as np
import pytest

from kexp.datasets.base import RawData
from kexp.datasets.imdb import ImdbOptions, load_imdb
from kexp.datasets.pipeline import prepare_dataset, read_data, split_rows
from kexp.datasets.sms_spam import SmsSpamOptions, load_sms_spam
from kexp.datasets.text_csv import TextCsvOptions, load_text_csv
from kexp.errors import DataError, SpecError
from kexp.preprocessing.text import TextPreprocessor
from kexp.spec import validate_spec
from kexp.text import Corpus, TextOptions

POS = ["a wonderful film, loved it", "great acting and a great story", "wonderful, moving, great"]
NEG = ["an awful film, hated it", "boring story and bad acting", "awful, dull, bad"]


def prepare(raw: RawData, seed: int = 0, validation_split: float = 0.0):
    """split -> fit on the training rows -> transform, as `kexp train` does after reading."""
    return prepare_dataset(raw, split_rows(raw, seed, validation_split))


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KEXP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def review_files(test_extra: str = "zebra zebra") -> dict[str, str]:
    files = {}
    for split in ("train", "test"):
        for label, texts in (("pos", POS), ("neg", NEG)):
            for i, text in enumerate(texts):
                files[f"aclImdb/{split}/{label}/{i}_{8 if label == 'pos' else 2}.txt"] = text + (f" {test_extra}" if split == "test" else "")
    files["aclImdb/README"] = "readme"
    return files


def write_tar(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_imdb_from_tarball_official_split_and_train_only_vocabulary(data_dir):
    write_tar(data_dir / "aclImdb_v1.tar.gz", review_files())
    raw = load_imdb(ImdbOptions(text=TextOptions(num_words=100)), data_dir, seed=0)
    assert isinstance(raw.inputs, Corpus) and isinstance(raw.preprocessor, TextPreprocessor)
    assert raw.labels.dtype == np.int32 and raw.is_test.sum() == 6 and raw.raw_input_unsupported is None
    data = prepare(raw)
    assert len(data.train) == 6 and len(data.test) == 6
    assert data.class_names == ["neg", "pos"] and data.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    vocabulary = data.preprocessing.vocabulary
    assert "great" in vocabulary and "zebra" not in vocabulary  # seen only in test: out of vocabulary
    assert data.train.x.dtype == np.uint8 and data.input_shape == (len(vocabulary),)
    assert data.summary["tokens_from_cache"] is False


def test_imdb_second_load_uses_token_cache(data_dir, cache_dir):
    write_tar(data_dir / "aclImdb_v1.tar.gz", review_files())
    first = prepare(load_imdb(ImdbOptions(), data_dir, seed=0))
    second = prepare(load_imdb(ImdbOptions(text=TextOptions(encoding="count")), data_dir, seed=0))
    assert second.summary["tokens_from_cache"] is True
    assert len(list((cache_dir / "tokens").iterdir())) == 1
    np.testing.assert_array_equal(first.train.x, second.train.x > 0)


def test_imdb_from_folder_and_all_split(data_dir):
    for name, text in review_files().items():
        path = data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    raw = load_imdb(ImdbOptions(split="all", test_fraction=0.5), data_dir, seed=1)
    assert raw.is_test is None and raw.test_fraction == 0.5 and raw.stratify
    data = prepare(raw, seed=1)
    assert len(data.train) == 6 and len(data.test) == 6
    assert sorted(data.test.y.tolist()) == [0, 0, 0, 1, 1, 1]  # stratified


def test_imdb_incomplete_archive_is_named(data_dir):
    files = {k: v for k, v in review_files().items() if "/test/pos/" not in k}
    write_tar(data_dir / "aclImdb_v1.tar.gz", files)
    with pytest.raises(DataError, match=r"aclImdb_v1.tar.gz: no reviews found under aclImdb/test/pos/"):
        load_imdb(ImdbOptions(), data_dir, seed=0)


def test_imdb_corrupt_archive(data_dir):
    path = write_tar(data_dir / "aclImdb_v1.tar.gz", review_files())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"aclImdb_v1.tar.gz: cannot read the archive"):
        load_imdb(ImdbOptions(), data_dir, seed=0)


def test_imdb_keras_npz(data_dir):
    x_train = np.empty(4, dtype=object)
    for i, seq in enumerate([[1, 14, 22, 5], [1, 14, 9], [1, 30, 2], [1, 30, 31]]):
        x_train[i] = seq
    x_test = np.empty(2, dtype=object)
    x_test[0], x_test[1] = [1, 14, 99], [1, 30]
    np.savez(data_dir / "imdb.npz", x_train=x_train, y_train=np.array([1, 1, 0, 0]), x_test=x_test, y_test=np.array([1, 0]))
    raw = load_imdb(ImdbOptions(text=TextOptions(num_words=3)), data_dir, seed=0)
    data = prepare(raw)
    assert data.preprocessing.vocabulary == ["#14", "#30", "#22"]
    assert data.test.x.tolist() == [[1, 0, 0], [0, 1, 0]]
    # word ids, not words: new raw text cannot be encoded like these, and the run must say so
    assert raw.raw_input_unsupported and "\n" not in raw.raw_input_unsupported
    assert data.raw_input_unsupported == raw.raw_input_unsupported


def test_imdb_missing_says_where_and_how(data_dir):
    with pytest.raises(DataError, match="kexp data fetch imdb"):
        load_imdb(ImdbOptions(), data_dir, seed=0)


def write_sms(path, extra: str = ""):
    lines = [f"ham\tsee you at lunch {i}" for i in range(12)] + [f"spam\tWIN a prize call 0800123456{i} now" for i in range(4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_sms_stratified_half_split(data_dir):
    write_sms(data_dir / "sms" / "SMSSpamCollection")
    options = SmsSpamOptions(text=TextOptions(num_words=50, encoding="count", fold_numbers=True))
    raw = load_sms_spam(options, data_dir, seed=0)
    assert raw.is_test is None and raw.test_fraction == 0.5 and raw.stratify
    data = prepare(raw)
    assert data.class_names == ["ham", "spam"]
    assert len(data.train) == 8 and len(data.test) == 8
    assert data.test.y.sum() == 2 and data.train.y.sum() == 2
    assert "<longnum>" in data.preprocessing.vocabulary


def test_sms_malformed_line_is_reported_with_number(data_dir):
    write_sms(data_dir / "sms" / "SMSSpamCollection", extra="maybe spam without a tab\n")
    with pytest.raises(DataError, match=r"SMSSpamCollection:17: expected 'ham' or 'spam', a TAB"):
        load_sms_spam(SmsSpamOptions(text=TextOptions()), data_dir, seed=0)


def test_text_csv_multiclass_by_column_names(data_dir):
    rows = ["id,review,topic"] + [f'{i},"{w} {w} thing {i}",{t}' for i, (w, t) in enumerate([("goal", "sport"), ("vote", "politics"), ("chip", "tech")] * 5)]
    (data_dir / "news.csv").write_text("\n".join(rows))
    data = prepare(load_text_csv(TextCsvOptions(path="news.csv", text_column="review", label_column="topic", test_fraction=0.4), data_dir, seed=0))
    assert data.class_names == ["politics", "sport", "tech"] and data.num_classes == 3
    assert len(data.train) == 9 and len(data.test) == 6


def test_text_csv_unknown_label_and_short_row(data_dir):
    (data_dir / "t.csv").write_text("text,label\nhello,a\nbye,b\nodd,c\n")
    with pytest.raises(DataError, match=r"t.csv:4: label 'c' is not one of the classes \['a', 'b'\]"):
        load_text_csv(TextCsvOptions(path="t.csv", class_names=["a", "b"]), data_dir, seed=0)
    (data_dir / "t.csv").write_text("text,label\nhello,a\nbye\n")
    with pytest.raises(DataError, match=r"t.csv:3: expected at least 2 fields, found 1"):
        load_text_csv(TextCsvOptions(path="t.csv"), data_dir, seed=0)


def test_text_csv_missing_label_is_an_error_with_file_and_line(data_dir):
    (data_dir / "t.csv").write_text("text,label\nhello,a\nbye,b\nwhat,NaN\n")
    message = "t.csv:4: missing label ('NaN') in column 'label'; fix the file or drop the row"
    with pytest.raises(DataError, match=re.escape(message)):
        load_text_csv(TextCsvOptions(path="t.csv"), data_dir, seed=0)
    (data_dir / "t.csv").write_text("text,label\nhello,a\nbye,\n")
    with pytest.raises(DataError, match=re.escape("t.csv:3: missing label ('') in column 'label'")):
        load_text_csv(TextCsvOptions(path="t.csv"), data_dir, seed=0)


def test_text_csv_class_names_given_as_numbers_are_labels():
    options = TextCsvOptions.model_validate({"path": "t.csv", "class_names": [1, 2.5, "x"]})
    assert options.class_names == ["1", "2.5", "x"]


def add_member(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    data = b"" if link else b"text"
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "name, kind, link, why",
    [
        ("aclImdb/../../evil.txt", tarfile.REGTYPE, "", "'..' in its path"),
        ("/etc/evil.txt", tarfile.REGTYPE, "", "absolute path"),
        ("aclImdb/train/pos/99_9.txt", tarfile.SYMTYPE, "/etc/passwd", "a link"),
        ("aclImdb/train/pos/98_9.txt", tarfile.LNKTYPE, "aclImdb/README", "a link"),
        ("aclImdb/dev", tarfile.CHRTYPE, "", "a device or pipe"),
    ],
)
def test_imdb_archive_with_unsafe_member_is_refused(data_dir, name, kind, link, why):
    path = data_dir / "aclImdb_v1.tar.gz"
    write_tar(path, review_files())
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
        add_member(tar, name, kind, link)
    with pytest.raises(DataError, match=re.escape(f"aclImdb_v1.tar.gz: refusing archive member '{name}' ({why})")):
        load_imdb(ImdbOptions(), data_dir, seed=0)


def test_sms_test_fraction_too_small_for_spam_names_the_option(data_dir):
    write_sms(data_dir / "sms" / "SMSSpamCollection")
    message = "data.test_fraction: class 'spam' (4 rows) has no row in the test split at 0.1; use at least 0.25"
    with pytest.raises(SpecError, match=re.escape(message) + "$"):
        prepare(load_sms_spam(SmsSpamOptions(test_fraction=0.1), data_dir, seed=0))


def test_imdb_all_split_too_large_test_fraction_names_the_option(data_dir):
    write_tar(data_dir / "aclImdb_v1.tar.gz", review_files())
    with pytest.raises(SpecError, match=re.escape("data.test_fraction: 0.95 of 12 rows leaves the train split empty; use at most 0.833")):
        prepare(load_imdb(ImdbOptions(split="all", test_fraction=0.95), data_dir, seed=0))


def test_text_csv_tiny_class_names_the_option(data_dir):
    rows = ["text,label"] + [f"word{i},{'rare' if i == 0 else 'common'}" for i in range(10)]
    (data_dir / "t.csv").write_text("\n".join(rows))
    with pytest.raises(SpecError, match=re.escape("data.test_fraction: class 'rare' (1 row) cannot be in both the train and the test split; add rows")):
        prepare(load_text_csv(TextCsvOptions(path="t.csv"), data_dir, seed=0))


def test_summary_files_are_absolute_with_sizes(data_dir, monkeypatch):
    sms = write_sms(data_dir / "sms" / "SMSSpamCollection")
    for name, text in review_files().items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_text(text)
    monkeypatch.chdir(data_dir.parent)
    relative = data_dir.relative_to(data_dir.parent)

    def files(name: str) -> list[dict]:
        spec = validate_spec({"name": "t", "data": {"name": name}, "model": {"name": "mlp"}})
        return [{k: v for k, v in f.items() if k != "sha256"} for f in read_data(spec, relative).summary["files"]]

    assert files("sms_spam") == [{"path": str(sms.absolute()), "bytes": sms.stat().st_size}]
    total = sum(len(text.encode()) for text in review_files().values())
    assert files("imdb") == [{"path": str((data_dir / "aclImdb").absolute()), "bytes": total}]


def test_text_csv_missing_file_does_not_suggest_a_download(data_dir):
    with pytest.raises(DataError) as info:
        load_text_csv(TextCsvOptions(path="mine.csv"), data_dir, seed=0)
    assert "mine.csv" in str(info.value) and "kexp data fetch" not in str(info.value)


def test_vocabulary_is_fitted_on_training_rows_only(data_dir):
    # Each document has its own word ("only<i>") besides the shared ones, so every row's word
    # shows whether that row was fitted on: training rows' words are in, the rest are not.
    rows = ["text,label"] + [f"common only{i},{'a' if i % 2 else 'b'}" for i in range(20)]
    (data_dir / "t.csv").write_text("\n".join(rows))
    raw = load_text_csv(TextCsvOptions(path="t.csv", test_fraction=0.25), data_dir, seed=0)
    parts = split_rows(raw, seed=0, validation_split=0.3)
    assert all(len(parts[name]) for name in ("train", "validation", "test"))
    data = prepare_dataset(raw, parts)
    vocabulary = set(data.preprocessing.vocabulary)
    assert vocabulary == {"common"} | {f"only{i}" for i in parts["train"]}
    assert len(data.validation) == len(parts["validation"]) and len(data.test) == len(parts["test"])
    assert data.validation.x[:, data.preprocessing.vocabulary.index("common")].all()
    assert data.validation.x.sum() == len(data.validation)  # their own words are out of vocabulary


def document_words(corpus: Corpus) -> list[list[str]]:
    return [[corpus.tokens[t] for t in corpus.ids[a:b]] for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:])]


def test_text_csv_changing_text_column_does_not_reuse_the_old_tokens(data_dir, cache_dir):
    rows = ["title,body,label"] + [f"title{i},body{i},{'a' if i % 2 else 'b'}" for i in range(6)]
    (data_dir / "t.csv").write_text("\n".join(rows))
    title = load_text_csv(TextCsvOptions(path="t.csv", text_column="title", label_column="label"), data_dir, seed=0)
    assert load_text_csv(TextCsvOptions(path="t.csv", text_column="title", label_column="label"), data_dir, seed=0).summary["tokens_from_cache"]
    body = load_text_csv(TextCsvOptions(path="t.csv", text_column="body", label_column="label"), data_dir, seed=0)
    assert document_words(title.inputs)[0] == ["title0"]
    assert document_words(body.inputs) == [[f"body{i}"] for i in range(6)]
    assert body.summary["tokens_from_cache"] is False


CSV_VARIANTS = {
    # what the file holds, the options read first (filling the cache), then options that make other documents
    "header": ("title,body,label\n" + "".join(f"w{i},v{i},{'ab'[i % 2]}\n" for i in range(6)),
               {"label_column": 2}, {"label_column": 2, "header": False}),
    "delimiter": ("t;u,label\n" + "".join(f"w{i};v{i},{'ab'[i % 2]}\n" for i in range(6)),
                  {"label_column": 1}, {"label_column": 1, "delimiter": ";"}),
}


@pytest.mark.parametrize("variant", sorted(CSV_VARIANTS))
def test_text_csv_cached_tokens_match_a_fresh_read(data_dir, monkeypatch, variant):
    text, first, second = CSV_VARIANTS[variant]
    (data_dir / "t.csv").write_text(text)

    def read(options: dict) -> RawData:
        return load_text_csv(TextCsvOptions(path="t.csv", **options), data_dir, seed=0)

    read(first)
    cached = read(second)
    monkeypatch.setenv("KEXP_CACHE_DIR", "none")
    fresh = read(second)
    assert document_words(cached.inputs) == document_words(fresh.inputs)
    assert len(cached.inputs) == len(cached.labels)
