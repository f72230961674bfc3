"""`imdb`: the Large Movie Review Dataset (Maas et al., 2011), 25k train + 25k test reviews.

Reads, from the data directory, the first of: the `aclImdb/` folder, the
`aclImdb_v1.tar.gz` archive (read in place, no extraction), or Keras' `imdb.npz`
(already integer-encoded; its ids are used as tokens, so `text` tokenization options
other than num_words/encoding/max_length do not apply).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import Field

from kexp.datasets.base import RawData, find_file
from kexp.datasets.textdata import reader_key, text_data, tokenized_corpus
from kexp.errors import DataError
from kexp.registry import Options, dataset
from kexp.text import Corpus, TextOptions

CLASS_NAMES = ["neg", "pos"]
REVIEW = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
NPZ_IS_IDS = "read from Keras' imdb.npz, whose words are ids of Keras' own index: new raw text cannot be encoded like it"


class ImdbOptions(Options):
    split: Literal["official", "all"] = Field(default="official", description="official 25k/25k, or all 50k re-split by test_fraction")
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0, description="used with split: all")
    text: TextOptions = Field(default_factory=TextOptions)

    def static_num_classes(self) -> int | None:
        return len(CLASS_NAMES)


def _review_key(name: str):
    match = REVIEW.search(name)
    if not match:
        return None
    split, label, number, _ = match.groups()
    return (split == "test", label == "pos", int(number))


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a member that points outside the archive's own tree or is not a plain file or folder.

    Reviews are read in place, never extracted, but such a member means the file is not the
    published aclImdb archive, and extracting it by hand could write outside the target folder.
    """
    why = unsafe_member_reason(member)
    if why:
        raise DataError(f"{archive}: refusing archive member '{member.name}' ({why}); this is not the aclImdb archive")


def unsafe_member_reason(member: tarfile.TarInfo) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or re.match(r"[A-Za-z]:", member.name):
        return "absolute path"
    if ".." in name.parts:
        return "'..' in its path"
    if member.issym() or member.islnk():
        return "a link"
    if member.isdev():
        return "a device or pipe"
    return None


def read_reviews_from_tar(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    reviews = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                check_member(member, path)
                key = _review_key(member.name) if member.isfile() else None
                if key is not None:
                    reviews[key] = tar.extractfile(member).read().decode("utf-8", errors="replace")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the archive: {exc}") from None
    return _ordered(reviews, path)


def read_reviews_from_folder(folder: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    reviews = {}
    for file in folder.glob("*/*/*.txt"):
        key = _review_key(file.as_posix())
        if key is not None:
            reviews[key] = file.read_text(encoding="utf-8", errors="replace")
    return _ordered(reviews, folder)


def _ordered(reviews: dict, source: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(texts, {labels, is_test}) sorted by split, label, review number; every part must be present."""
    keys = sorted(reviews)
    for is_test in (False, True):
        for is_pos in (False, True):
            if not any(k[0] == is_test and k[1] == is_pos for k in keys):
                part = f"aclImdb/{'test' if is_test else 'train'}/{'pos' if is_pos else 'neg'}"
                raise DataError(f"{source}: no reviews found under {part}/ (incomplete or not the aclImdb data set)")
    labels = np.array([k[1] for k in keys], dtype=np.int8)
    is_test = np.array([k[0] for k in keys], dtype=bool)
    return [reviews[k] for k in keys], {"labels": labels, "is_test": is_test}


def read_keras_npz(path: Path) -> tuple[Corpus, dict[str, np.ndarray]]:
    """Keras' imdb.npz: ids offset by 3 (1 = start, 2 = out of vocabulary), which are dropped."""
    try:
        with np.load(path, allow_pickle=True) as f:
            parts = [(f["x_train"], f["y_train"], False), (f["x_test"], f["y_test"], True)]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataError(f"{path}: not a Keras imdb.npz ({exc})") from None
    sequences = [np.asarray(seq, dtype=np.int64) for x, _, _ in parts for seq in x]
    sequences = [seq[seq > 2] for seq in sequences]
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    flat = np.concatenate(sequences) if sequences else np.array([], dtype=np.int64)
    distinct, ids = np.unique(flat, return_inverse=True)
    corpus = Corpus([f"#{i}" for i in distinct], ids.astype(np.int32), np.concatenate([[0], np.cumsum(lengths)]))
    labels = np.concatenate([np.asarray(y) for _, y, _ in parts]).astype(np.int8)
    is_test = np.concatenate([np.full(len(y), t) for _, y, t in parts])
    return corpus, {"labels": labels, "is_test": is_test}


@dataset("imdb", ImdbOptions)
def load_imdb(options: ImdbOptions, data_dir: Path, seed: int) -> RawData:
    """IMDB movie reviews, positive or negative; raw text from aclImdb, or Keras' imdb.npz."""
    folder = data_dir / "aclImdb"
    if (folder / "train").is_dir():
        source, reader = folder, read_reviews_from_folder
    else:
        source, reader = find_file(data_dir, ["aclImdb_v1.tar.gz", "imdb.npz"], "imdb"), read_reviews_from_tar

    def read():
        return reader(source)

    if source.name.endswith(".npz"):
        (corpus, arrays), cached = read_keras_npz(source), False
    else:
        corpus, arrays, cached = tokenized_corpus("imdb", [source], options.text, read, reader_key(options))
    if options.split == "official":
        split = {"is_test": arrays["is_test"]}
    else:
        split = {"test_fraction": options.test_fraction, "stratify": True}
    raw = text_data(corpus, arrays["labels"], CLASS_NAMES, options.text, [source], cached, **split)
    if source.name.endswith(".npz"):
        raw.raw_input_unsupported = NPZ_IS_IDS
    return raw
