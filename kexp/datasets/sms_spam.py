"""`sms_spam`: UCI's SMS Spam Collection (5,574 messages, `ham|spam<TAB>text` per line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from kexp.datasets.base import RawData, find_file
from kexp.datasets.textdata import reader_key, text_data, tokenized_corpus
from kexp.errors import DataError
from kexp.registry import Options, dataset
from kexp.text import TextOptions

CLASS_NAMES = ["ham", "spam"]


class SmsSpamOptions(Options):
    path: str = "sms/SMSSpamCollection"
    test_fraction: float = Field(default=0.5, gt=0.0, lt=1.0, description="stratified: ham and spam keep their shares")
    # The tutorial's text settings live in configs/sms_spam.yaml: a partial `text:` mapping
    # is completed from TextOptions' own defaults, so a second set of defaults here would mislead.
    text: TextOptions = Field(default_factory=TextOptions)

    def static_num_classes(self) -> int | None:
        return len(CLASS_NAMES)


def read_sms(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Messages and labels (0 ham, 1 spam); a malformed line is reported by number."""
    texts, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or label not in CLASS_NAMES:
            raise DataError(f"{path}:{number}: expected 'ham' or 'spam', a TAB, then the message; got {line[:40]!r}")
        texts.append(text)
        labels.append(CLASS_NAMES.index(label))
    if not texts:
        raise DataError(f"{path}: no messages")
    return texts, {"labels": np.array(labels, dtype=np.int8)}


@dataset("sms_spam", SmsSpamOptions)
def load_sms_spam(options: SmsSpamOptions, data_dir: Path, seed: int) -> RawData:
    """SMS Spam Collection: ham or spam, to be split stratified by test_fraction."""
    path = find_file(data_dir, [options.path, "SMSSpamCollection"], "sms_spam")
    corpus, arrays, cached = tokenized_corpus("sms_spam", [path], options.text, lambda: read_sms(path), reader_key(options))
    return text_data(corpus, arrays["labels"], CLASS_NAMES, options.text, [path], cached, test_fraction=options.test_fraction, stratify=True)
