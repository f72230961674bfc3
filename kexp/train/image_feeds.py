"""The input pipeline of a streamed part (image_folder): files read, decoded and resized per batch.

Only the paths and labels are tensors; each batch's files are read (tf.io.read_file) and decoded
(kexp.preprocessing.image_files.decode_pixels) by a fixed number of parallel calls, with at most
PREFETCH batches ready ahead, so memory is bounded by a few batches whatever the folder's size.
Epochs are shuffled by (seed, epoch) alone, as kexp.train.feeds does for arrays, and the order
is deterministic. The training stream alone applies the part's augmentation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from kexp.errors import DataError
from kexp.preprocessing.image_files import AugmentOptions, ImageFiles, decode_pixels, first_undecodable
from kexp.train.batching import as_tensor, epoch_order, untuned

# Files decoded at once: enough to keep a few cores busy, a fixed number so the order and the
# memory are the same on every machine (tf.data's autotuner is off, see batching.untuned).
DECODE_CALLS = max(2, min(8, os.cpu_count() or 2))
PREFETCH = 2


def image_feed(part, batch_size: int, shuffle: bool = False, seed: int = 0, first_epoch: int | None = None):
    """(images, targets) batches of a Split whose x is ImageFiles, as kexp.train.feeds.feed gives them
    for arrays: in order for scoring, or (`first_epoch` given) an endless stream of shuffled epochs,
    augmented, for training."""
    import tensorflow as tf

    files: ImageFiles = part.x
    paths, targets = as_tensor(files.paths), as_tensor(part.y)

    def load(index):
        return decode_pixels(tf.io.read_file(tf.gather(paths, index)), files.decoding), tf.gather(targets, index)

    def decoded(rows):
        return rows.map(load, num_parallel_calls=DECODE_CALLS).batch(batch_size)

    if first_epoch is None:
        return untuned(decoded(tf.data.Dataset.range(len(part.y))).prefetch(PREFETCH))

    def one_epoch(epoch):  # each epoch ends with its own short batch, as feeds.epoch_batches
        batches = decoded(tf.data.Dataset.from_tensor_slices(epoch_order(len(part.y), shuffle, seed, epoch)))
        return batches.enumerate().map(lambda batch, xy: (xy[0], xy[1], epoch, batch))

    batches = tf.data.Dataset.range(first_epoch, 2**62).flat_map(one_epoch)
    if files.augment is None:
        batches = batches.map(lambda x, y, epoch, batch: (x, y))
    else:
        augment = augmenter(files.augment, files.decoding.scale, seed)
        batches = batches.map(lambda x, y, epoch, batch: (augment(x, epoch, batch), y))  # one call at a time, in order
    return untuned(batches.prefetch(PREFETCH))


def augmenter(options: AugmentOptions, scaled: bool, seed: int):
    """A function applying the options' Keras preprocessing layers to a batch (training mode), each seeded from `seed`."""
    import keras

    layers: list[Any] = []
    if options.flip is not None:
        layers.append(keras.layers.RandomFlip(options.flip, seed=seed))
    if options.rotation > 0:
        layers.append(keras.layers.RandomRotation(options.rotation, seed=seed + 1))
    if options.zoom > 0:
        layers.append(keras.layers.RandomZoom(options.zoom, seed=seed + 2))
    if options.contrast > 0:  # its value range is the pixels' (it clips to it)
        layers.append(keras.layers.RandomContrast(options.contrast, value_range=(0, 1) if scaled else (0, 255), seed=seed + 3))

    def augment(images, epoch, batch):
        # Each batch's random draws depend on (seed, epoch, batch) alone, not on the batches before
        # it, so a resumed run augments its epochs exactly as an uninterrupted run would.
        import tensorflow as tf

        for offset, layer in enumerate(layers):
            state = layer.generator.state
            draw = tf.stack([tf.cast(seed + offset, tf.int64), epoch * 2**20 + batch])
            state.assign(tf.cast(draw % 2**32, state.dtype))
            images = layer(images, training=True)
        return images

    return augment


@contextlib.contextmanager
def named_decode_errors(parts: dict[str, Any]) -> Iterator[None]:
    """A file that passed the cheap checks but fails to decode in a streamed part's pipeline: a DataError
    naming it (found by decoding the part's files again, only after the failure), not TensorFlow's traceback."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as exc:
        for part in parts.values():
            found = first_undecodable(part.x) if part is not None and part.streamed else None
            if found is not None:
                path, problem = found
                raise DataError(f"{path}: {problem}; remove it (kexp's checks before training only catch non-image and truncated files)") from None
        raise exc
