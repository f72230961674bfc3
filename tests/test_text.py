"""Tokenizer options, vocabulary fitting, encodings, the cache key and the fitted state."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from kexp.errors import DataError
from kexp.preprocessing.text import FittedText, TextPreprocessor
from kexp.text import (
    FOLDED_NUMBER,
    TextOptions,
    cache_path,
    make_tokenizer,
    require_nltk_corpus,
    tokenize_corpus,
)

STOPWORDS = "the\na\nis\nand\nthis\nof\nto\ni\n"


@pytest.fixture
def nltk_data(tmp_path, monkeypatch):
    """A minimal NLTK data folder: stopwords built here; WordNet from NLTK_DATA when the machine has it."""
    import nltk

    folder = tmp_path / "nltk_data" / "corpora"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "stopwords.zip", "w") as zf:
        zf.writestr("stopwords/english", STOPWORDS)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")] + list(nltk.data.path))
    nltk.corpus.stopwords._unload() if hasattr(nltk.corpus.stopwords, "_unload") else None
    return folder


def tokens(text: str, **options) -> list[str]:
    return make_tokenizer(TextOptions(**options))(text)


def test_lowercase_html_and_regexp_tokenizer():
    assert tokens("Great film!<br /><br />Loved it &amp; don't   care.") == ["great", "film", "loved", "it", "don't", "care"]
    assert tokens("A <b>B</b>", lowercase=False, strip_html=False) == ["A", "b", "B", "b"]


def test_regexp_tokens_do_not_depend_on_the_nltk_version_and_need_no_nltk_import():
    # NLTK 3.10's `regex` engine reads x² as "x" and is 3.7x slower; the stdlib's re keeps "x²"
    code = (
        "import sys\n"
        "from kexp.text import TextOptions, make_tokenizer\n"
        "print(make_tokenizer(TextOptions())('x² costs ½ of the café'), 'nltk' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['x²', 'costs', '½', 'of', 'the', 'café'] False"


def test_wordpunct_and_treebank_tokenizers_need_no_download():
    assert tokens("Hi, you!", tokenizer="wordpunct") == ["hi", ",", "you", "!"]
    assert tokens("Don't go.", tokenizer="treebank") == ["do", "n't", "go", "."]


def test_alphabetic_only_drops_numbers_and_single_letters():
    assert tokens("Call 08001234567 now, a £5 prize x2!", alphabetic_only=True) == ["call", "now", "prize"]


def test_fold_numbers_keeps_long_digit_runs_as_one_token():
    assert tokens("Call 08001234567 or 09061701461 for £1000", alphabetic_only=True, fold_numbers=True) == [
        "call", FOLDED_NUMBER, "or", FOLDED_NUMBER, "for"]
    assert tokens("win 1000 now", fold_numbers=True) == ["win", "1000", "now"]


def test_stopwords_from_nltk(nltk_data):
    assert tokens("This is the best of films", stopwords=True) == ["best", "films"]


def test_stemming():
    assert tokens("running runners easily", stem="porter") == ["run", "runner", "easili"]
    assert tokens("running runners", stem="snowball") == ["run", "runner"]


@pytest.mark.long
def test_lemmatizer_when_wordnet_is_available():
    try:
        require_nltk_corpus("wordnet")
    except DataError:
        pytest.skip("WordNet is not installed here (CI points NLTK_DATA at it)")
    assert tokens("the cats were eating geese", lemmatize=True) == ["the", "cat", "were", "eating", "goose"]


def test_missing_corpus_offline_is_one_line_naming_resource_and_fix(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setenv("KEXP_OFFLINE", "1")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    with pytest.raises(DataError) as info:
        require_nltk_corpus("stopwords")
    message = str(info.value)
    assert "\n" not in message
    assert "NLTK corpus 'stopwords' not found (looked in" in message and str(tmp_path / "empty") in message
    assert "python -m nltk.downloader stopwords" in message and "NLTK_DATA" in message


CORPUS = ["good good film", "bad film", "good plot", "awful bad bad", "unseen word here"]


def fitted(encoding: str, num_words: int = 10, **options):
    """The CORPUS tokenized, and text preprocessing fitted on its first four documents."""
    text_options = TextOptions(num_words=num_words, encoding=encoding, **options)
    corpus = tokenize_corpus(CORPUS, make_tokenizer(text_options), progress=False)
    return corpus, TextPreprocessor(text_options).fit(corpus, np.arange(4))


def test_vocabulary_is_fitted_on_train_only_by_frequency():
    _, text = fitted("multi_hot")
    # counts in the first four docs: bad 3, good 3, film 2, awful 1, plot 1 (ties alphabetical)
    assert text.vocabulary == ["bad", "good", "film", "awful", "plot"]
    assert "unseen" not in text.vocabulary
    _, small = fitted("multi_hot", num_words=2)
    assert small.vocabulary == ["bad", "good"]


def test_multi_hot_and_count_encodings():
    corpus, text = fitted("multi_hot")
    x = text.transform(corpus)
    assert x.dtype == np.uint8 and x.shape == (5, 5)
    assert x[0].tolist() == [0, 1, 1, 0, 0]
    assert x[4].tolist() == [0, 0, 0, 0, 0]  # only out-of-vocabulary words
    corpus, text = fitted("count")
    x = text.transform(corpus)
    assert x.dtype == np.uint16 and x[0].tolist() == [0, 2, 1, 0, 0] and x[3].tolist() == [2, 0, 0, 1, 0]


def test_tfidf_uses_train_document_frequency():
    corpus, text = fitted("tfidf")
    x = text.transform(corpus)
    assert x.dtype == np.float32
    # "good": in 2 of 4 train docs -> log(1 + 4/3); doc 0 has it twice
    assert x[0, 1] == pytest.approx(2 * np.log1p(4 / 3), rel=1e-6)
    assert x[0, 0] == 0


def test_sequence_encoding_pads_truncates_and_marks_unknown():
    corpus, text = fitted("sequence", num_words=3, max_length=3)
    x = text.transform(corpus)
    assert x.dtype == np.int32 and x.shape == (5, 3)
    # ids: bad 2, good 3, film 4; unknown 1; padding 0
    assert x[0].tolist() == [3, 3, 4]
    assert x[1].tolist() == [2, 4, 0]
    assert x[2].tolist() == [3, 1, 0]
    assert x[4].tolist() == [1, 1, 1]
    assert text.input_shape() == (3,)


def test_transform_selects_rows_in_the_order_given():
    corpus, text = fitted("count")
    everything = text.transform(corpus)
    np.testing.assert_array_equal(text.transform(corpus, np.array([3, 0])), everything[[3, 0]])
    assert text.transform(corpus, np.array([], dtype=np.int64)).shape == (0, 5)
    assert text.kind == "text" and text.input_shape() == (5,)


@pytest.mark.parametrize("encoding", ["multi_hot", "count", "tfidf", "sequence"])
def test_state_rebuilds_a_preprocessor_that_encodes_raw_text_identically(encoding):
    corpus, text = fitted(encoding, fold_numbers=True)
    state = json.loads(json.dumps(text.state()))  # what the run store writes and reads back
    again = FittedText.from_state(state)
    assert again.vocabulary == text.vocabulary and again.options == text.options and again.kind == "text"
    np.testing.assert_array_equal(again.encode_texts(CORPUS), text.encode_texts(CORPUS))
    np.testing.assert_array_equal(again.encode_texts(CORPUS), text.transform(corpus))
    assert again.encode_texts(CORPUS).dtype == text.transform(corpus).dtype


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda s: s.pop("vocabulary"), "missing vocabulary"),
        (lambda s: s.update(idf=[1.0]), "tfidf needs one idf weight per vocabulary word"),
        (lambda s: s["options"].update(encoding="bag"), "encoding"),
    ],
)
def test_damaged_state_is_a_value_error_naming_the_problem(change, problem):
    _, text = fitted("tfidf")
    state = json.loads(json.dumps(text.state()))
    change(state)
    with pytest.raises(ValueError, match=problem):
        FittedText.from_state(state)


def test_cache_key_changes_with_tokenization_options_not_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setenv("KEXP_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "a.txt"
    f.write_text("x")
    base = cache_path("k", [f], TextOptions())
    assert base == cache_path("k", [f], TextOptions(num_words=5, encoding="count"))
    assert base != cache_path("k", [f], TextOptions(stopwords=True))
    f.write_text("xy")  # a changed file is a new key
    assert base != cache_path("k", [f], TextOptions())
    monkeypatch.setenv("KEXP_CACHE_DIR", "none")
    assert cache_path("k", [f], TextOptions()) is None


def test_cache_key_includes_the_readers_options(tmp_path, monkeypatch):
    monkeypatch.setenv("KEXP_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "a.csv"
    f.write_text("x")
    base = cache_path("k", [f], TextOptions(), {"text_column": 0})
    assert base == cache_path("k", [f], TextOptions(), {"text_column": 0})
    assert base != cache_path("k", [f], TextOptions(), {"text_column": 1})
    assert base != cache_path("k", [f], TextOptions())


def test_cache_key_of_a_folder_changes_when_a_file_inside_changes(tmp_path, monkeypatch):
    import os

    from kexp.text import TextOptions, cache_path

    monkeypatch.setenv("KEXP_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "aclImdb" / "train" / "pos"
    folder.mkdir(parents=True)
    review = folder / "0_9.txt"
    review.write_text("a fine film")
    before = cache_path("imdb", [tmp_path / "aclImdb"], TextOptions())
    stat = (tmp_path / "aclImdb").stat()
    review.write_text("a dull film, longer")
    os.utime(tmp_path / "aclImdb", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the folder's own stat is unchanged
    assert cache_path("imdb", [tmp_path / "aclImdb"], TextOptions()) != before


def test_tokenizing_reports_progress_to_the_callers_emit_and_prints_nothing(capsys):
    from kexp.events import reporting

    seen: list[tuple[str, dict]] = []
    texts = ["good film"] * 1200
    tokenize_corpus(texts, make_tokenizer(TextOptions()), total=len(texts))  # nobody listening: nothing happens
    with reporting(lambda kind, **fields: seen.append((kind, fields))):
        tokenize_corpus(texts, make_tokenizer(TextOptions()), total=len(texts))
        tokenize_corpus(texts, make_tokenizer(TextOptions()), progress=False)
    assert [(kind, fields.get("done")) for kind, fields in seen] == [("progress", 0), ("progress", 500), ("progress", 1000), ("progress_end", None)]
    assert all(fields["task"] == "tokenizing" for _, fields in seen) and seen[0][1]["total"] == 1200
    assert capsys.readouterr() == ("", "")
