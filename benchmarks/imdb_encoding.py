"""Encoding IMDB token ids into 10,000-word multi-hot inputs: the tutorial's loop vs kexp.

    KEXP_DATA_DIR=../shared/data python benchmarks/imdb_encoding.py

Both start from the same tokenized corpus and vocabulary (fitted on train) and encode
all 50,000 reviews. The tutorial builds a float64 matrix row by row in Python; kexp
scatters every token at once into uint8. Writes benchmarks/results/imdb_encoding.json.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
from common import write_result

from kexp.datasets.imdb import read_reviews_from_tar
from kexp.datasets.textdata import tokenized_corpus
from kexp.preprocessing.text import column_lookup, encode_bag, fit_vocabulary
from kexp.text import TextOptions


def vectorize_sequences(sequences, dimension=10000):
    """The tutorial's function, verbatim."""
    results = np.zeros((len(sequences), dimension))
    for i, sequence in enumerate(sequences):
        results[i, sequence] = 1.0
    return results


def main() -> None:
    data_dir = Path(os.environ.get("KEXP_DATA_DIR", "data"))
    options = TextOptions(num_words=10000)
    tar = data_dir / "aclImdb_v1.tar.gz"

    corpus, arrays, _ = tokenized_corpus("imdb", [tar], options, lambda: read_reviews_from_tar(tar))
    docs = np.arange(len(corpus))
    train = np.flatnonzero(~arrays["is_test"])
    vocabulary = fit_vocabulary(corpus, train, options.num_words)
    columns = column_lookup(corpus, vocabulary)
    # The tutorial's input: one Python list of word indices per review (not timed).
    mapped = columns[corpus.ids]
    sequences = [[int(c) for c in mapped[a:b] if c >= 0] for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:])]

    timings = {}
    for name, encode in (("tutorial_loop_float64", lambda: vectorize_sequences(sequences)),
                         ("kexp_encode_bag_uint8", lambda: encode_bag(corpus, docs, columns, len(vocabulary), "multi_hot"))):
        best = None
        for _ in range(3):
            start = time.perf_counter()
            matrix = encode()
            seconds = time.perf_counter() - start
            best = seconds if best is None else min(best, seconds)
        timings[name] = {"seconds_best_of_3": round(best, 3), "matrix_mb": round(matrix.nbytes / 2**20), "dtype": str(matrix.dtype), "shape": list(matrix.shape)}
        results = matrix
        del matrix
    reference = vectorize_sequences(sequences[:2000])
    assert np.array_equal(reference.astype(np.uint8), results[:2000]), "encodings differ"
    timings["speedup"] = round(timings["tutorial_loop_float64"]["seconds_best_of_3"] / timings["kexp_encode_bag_uint8"]["seconds_best_of_3"], 1)
    write_result("imdb_encoding", timings)
    print(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
