"""The tf.data pieces every input pipeline shares: a fixed, deterministic pipeline, an epoch's
row order by (seed, epoch) alone, and arrays made tensors once (kexp.train.feeds for arrays,
kexp.train.image_feeds for image files).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np


def untuned(dataset):
    """The pipeline, deterministic and without tf.data's autotuner: its parallelism is fixed,
    and the autotuner's thread made deleting the iterator at the end of fit wait for its next
    wake-up (25 s after the MNIST CNN's 3 epochs, fit 82.9 s instead of 51.9 s)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return dataset.with_options(options)


def epoch_order(rows: int, shuffle: bool, seed: int, epoch):
    """The row indices of one epoch, shuffled by (seed, epoch) alone."""
    import tensorflow as tf

    order = tf.range(rows, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return order


# Tensors made from arrays still alive, by id: training, evaluation and the report read the same
# arrays, and each copy of MNIST's training images is 188 MB.
_TENSORS: dict[int, tuple[weakref.ref, Any]] = {}


def as_tensor(array: np.ndarray):
    """The array as a TensorFlow tensor in host memory, made once while the array lives."""
    import tensorflow as tf

    for key in [k for k, (ref, _) in _TENSORS.items() if ref() is None]:
        del _TENSORS[key]
    held = _TENSORS.get(id(array))
    if held is not None and held[0]() is array:
        return held[1]
    with tf.device("/CPU:0"):  # the data stays in host memory whatever device trains
        tensor = tf.convert_to_tensor(array)
    _TENSORS[id(array)] = (weakref.ref(array), tensor)
    return tensor
