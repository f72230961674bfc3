"""What model.fit and the scoring passes read: tf.data pipelines of a Split's batches, in TensorFlow's graph.

feed gives (inputs, targets) batches, for training an endless stream of epochs each shuffled
by (seed, epoch) alone; epoch_feed gives whole epochs as single elements, for train.loop xla
(kexp.train.loop). The arrays become tensors once (as_tensor) or, when large, stay NumPy
arrays that each batch is gathered from (row_gatherer).
"""

from __future__ import annotations

import numpy as np

from kexp.train.batching import as_tensor, epoch_order, untuned


def feed(part, batch_size: int, shuffle: bool = False, seed: int = 0, first_epoch: int | None = None, whole_batches: bool = False):
    """A tf.data pipeline of (inputs, targets) batches of `part` (a Split whose y holds the
    targets in the loss's form), all of it in TensorFlow's graph.

    The arrays become tensors once and each batch is a gather of row indices, so no Python
    runs per batch (Keras' own numpy path copies the arrays again for every fit and evaluate
    call, and a Python batch feeder costs a round trip per batch). Inputs stored compactly
    (uint8 pixels, 0/1 word presence) are cast to float32 per batch (and divided by
    part.divisor: the same floats the preprocessing would have stored).

    For training (`first_epoch` given) it is an endless stream of epochs from that one on,
    each shuffled by (seed, epoch) alone and ending with its own short batch: fit takes it
    with steps_per_epoch, keeps one iterator for the whole fit (one per epoch cost Pima 25 ms
    an epoch), and a resumed run sees the batches an uninterrupted one would have. Keras'
    last call of an epoch runs its full steps_per_execution, so that must divide the epoch
    (see steps_per_call).

    `whole_batches` leaves out each pass's short last batch: over several processes every global
    batch is split evenly among them, and each must take the same number of steps.
    """
    import tensorflow as tf

    if part.streamed:  # image files, decoded per batch (kexp.train.image_feeds)
        from kexp.train.image_feeds import image_feed

        return image_feed(part, batch_size, shuffle, seed, first_epoch)
    take_rows, targets, divisor = row_gatherer(part.x), as_tensor(part.y), part.divisor
    if first_epoch is None:
        batches = tf.data.Dataset.range(len(part.y)).batch(batch_size, drop_remainder=whole_batches)
    else:
        batches = epoch_batches(len(part.y), batch_size, shuffle, seed, first_epoch, whole_batches)
    compact = np.issubdtype(part.x.dtype, np.integer) or part.x.dtype == np.bool_

    def gather(index):
        batch = take_rows(index)
        if compact:
            batch = tf.cast(batch, tf.float32)
        if divisor is not None:
            batch = batch / divisor
        return batch, tf.gather(targets, index)

    # a bounded number of batches in flight: AUTOTUNE held hundreds of MB of IMDB's float batches
    return untuned(batches.map(gather, num_parallel_calls=2).prefetch(2))


def epoch_batches(rows: int, batch_size: int, shuffle: bool, seed: int, first_epoch: int, whole_batches: bool = False):
    """Row-index batches of epoch first_epoch, first_epoch + 1, ...; an epoch's order depends on (seed, epoch) only."""
    import tensorflow as tf

    def one_epoch(epoch):
        return tf.data.Dataset.from_tensor_slices(epoch_order(rows, shuffle, seed, epoch)).batch(batch_size, drop_remainder=whole_batches)

    return tf.data.Dataset.range(first_epoch, 2**62).flat_map(one_epoch)


def epoch_feed(part, batch_size: int, shuffle: bool, seed: int, first_epoch: int):
    """For train.loop xla: an endless stream of whole epochs from first_epoch on, each one element
    ((x, y) of its full batches stacked [batches, batch_size, ...], then (x, y) of the short last
    batch if there is one), with the rows feed would give batch by batch. Inputs stay as stored."""
    import tensorflow as tf

    take_rows, targets = row_gatherer(part.x), as_tensor(part.y)
    rows = len(part.y)
    full = rows // batch_size

    def one_epoch(epoch):
        order = epoch_order(rows, shuffle, seed, epoch)
        head = order[: full * batch_size]
        stacked = (tf.reshape(take_rows(head), (full, batch_size, *part.x.shape[1:])),
                   tf.reshape(tf.gather(targets, head), (full, batch_size, *part.y.shape[1:])))
        if full * batch_size == rows:
            return (stacked,)
        last = order[full * batch_size:]
        return stacked, (take_rows(last), tf.gather(targets, last))

    return untuned(tf.data.Dataset.range(first_epoch, 2**62).map(one_epoch).prefetch(1))


# Above this size the inputs stay a NumPy array that each batch is gathered from (one Python
# call per batch), instead of becoming a tensor: TensorFlow copies the array, and IMDB's 25,000
# x 10,000 presence matrix would then be held twice.
COPY_UP_TO_BYTES = 64 * 2**20


def row_gatherer(x: np.ndarray):
    """A graph function from row indices to those rows of x (a tensor for small x, NumPy for large)."""
    import tensorflow as tf

    if x.nbytes <= COPY_UP_TO_BYTES:
        inputs = as_tensor(x)
        return lambda index: tf.gather(inputs, index)
    dtype, shape = tf.as_dtype(x.dtype), (None, *x.shape[1:])

    def take_rows(index):
        batch = tf.numpy_function(lambda i: x[i], [index], dtype, stateful=False)
        batch.set_shape(shape)
        return batch

    return take_rows


def steps(rows: int, batch_size: int, whole_batches: bool = False) -> int:
    """Batches per epoch, the last one possibly short (or left out: whole_batches)."""
    return rows // batch_size if whole_batches else -(-rows // batch_size)
