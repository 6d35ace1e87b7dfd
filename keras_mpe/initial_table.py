"""A table's initial values, made and remade chunk by chunk from a seed.

The retraining starts from the table's initial random values (the
rewind, ALGORITHM section 5). Keeping a copy costs as much memory as the
table itself, so the layer keeps a seed instead: rows
[c * CHUNK_ROWS, (c + 1) * CHUNK_ROWS) are the initializer's values with
seed `seed + c` (initializers without a seed, such as "zeros", give the
same values anyway), generated again whenever needed. Working one chunk
at a time, making the table, comparing it and rewinding it need one
chunk's memory next to the table, and so does its mean |e| here.
"""

import numpy as np
import tensorflow as tf

from keras_mpe import _compat

CHUNK_ROWS = 1 << 16
MAX_SEED = 2**31 - 1


def _chunk_initializer(initializer, seed: int, chunk: int):
    """`initializer` with the seed of chunk `chunk`."""
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    config["seed"] = (seed + chunk) % MAX_SEED
    return type(initializer).from_config(config)


def chunks(initializer, seed: int, rows: int, dim: int):
    """Yields `(start, values)`: each chunk's first row and float32 rows."""
    for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
        shape = (min(CHUNK_ROWS, rows - start), dim)
        make = _chunk_initializer(initializer, seed, chunk)
        yield start, tf.convert_to_tensor(make(shape, dtype="float32"))


def assign(weight, initializer, seed: int):
    """Sets `weight` `(rows, dim)` to its initial values."""
    rows, dim = weight.shape
    for start, values in chunks(initializer, seed, rows, dim):
        _compat.assign_rows(weight, start, values)


def mean_abs(weight) -> float:
    """mean |w| of a `(rows, ...)` weight, read one chunk at a time."""
    rows = weight.shape[0]
    total = 0.0
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        total += np.abs(_compat.read_rows(weight, start, stop)).sum(
            dtype=np.float64
        )
    return total / max(1, np.prod(weight.shape))


def holds_initial_values(weight, initializer, seed: int) -> bool:
    """Whether `weight` still holds exactly its initial values."""
    rows, dim = weight.shape
    for start, values in chunks(initializer, seed, rows, dim):
        stop = start + values.shape[0]
        if not np.array_equal(
            _compat.read_rows(weight, start, stop), values.numpy()
        ):
            return False
    return True
