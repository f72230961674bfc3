"""The IMDB tutorial's approach as a plain script, from the raw aclImdb archive:
simple tokenization, top-10,000 word index from train, the tutorial's Python loop into
a float64 multi-hot matrix, Dense 16-16-1, rmsprop, 4 epochs, batch 512.

    python benchmarks/baselines/imdb_keras.py ../shared/data/aclImdb_v1.tar.gz [--seed S]
"""

import re
import tarfile
import time
from collections import Counter

import keras
import numpy as np
from bench_hooks import DATA, SEED, FirstBatch, report

keras.utils.set_random_seed(SEED)
start = time.perf_counter()
data = {"train": ([], []), "test": ([], [])}
with tarfile.open(DATA, "r:gz") as tar:
    for member in tar:
        m = re.search(r"aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt$", member.name)
        if m:
            texts, labels = data[m.group(1)]
            texts.append(tar.extractfile(member).read().decode("utf-8"))
            labels.append(1 if m.group(2) == "pos" else 0)


def tokenize(text):
    return re.findall(r"[a-z0-9']+", text.replace("<br />", " ").lower())


tokens = {split: [tokenize(t) for t in texts] for split, (texts, _) in data.items()}
counts = Counter(w for doc in tokens["train"] for w in doc)
word_index = {w: i for i, (w, _) in enumerate(counts.most_common(10000))}
sequences = {split: [[word_index[w] for w in doc if w in word_index] for doc in docs] for split, docs in tokens.items()}
read_seconds = time.perf_counter() - start


def vectorize_sequences(sequences, dimension=10000):
    results = np.zeros((len(sequences), dimension))
    for i, sequence in enumerate(sequences):
        results[i, sequence] = 1.0
    return results


t = time.perf_counter()
x_train, x_test = vectorize_sequences(sequences["train"]), vectorize_sequences(sequences["test"])
vectorize_seconds = time.perf_counter() - t
y_train, y_test = np.asarray(data["train"][1], dtype="float32"), np.asarray(data["test"][1], dtype="float32")

model = keras.Sequential([keras.Input((10000,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=4, batch_size=512, callbacks=[FirstBatch()])
loss, accuracy = model.evaluate(x_test, y_test)
print(f"read+tokenize {read_seconds:.1f} s  vectorize {vectorize_seconds:.1f} s  test accuracy {accuracy:.4f}")
report(accuracy)
