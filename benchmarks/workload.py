"""The large-table workload the speed benchmarks share.

A 1,000,000 x 16 table shared by 26 fields whose global ids follow
Zipf(1.1) (id 0 the most frequent), under an MLP 256-128 with a sigmoid
output; the flags that size it; and the name of the Keras in use, for
the benchmarks' first line.
"""

import argparse

import numpy as np
import tensorflow as tf

keras = tf.keras
# tf_keras's `tf.keras` has no `__version__`: it is Keras 2.
KERAS_3 = int(getattr(keras, "__version__", "2").split(".")[0]) >= 3
KERAS = "Keras 3" if KERAS_3 else "tf_keras"


def argument_parser(description):
    """An `ArgumentParser` whose help shows the defaults, with the table's
    flags `--rows` and `--dim`."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="table rows"
    )
    parser.add_argument(
        "--dim", type=int, default=16, help="embedding dimension"
    )
    return parser


def zipf_ids(rows, shape, rng):
    """Ids in [0, rows) with P(id) ~ (id + 1)^-1.1, as int32.

    Inverse-transform sampling of the continuous density r^-1.1 on
    [1, rows + 1]: r = (1 + u ((rows + 1)^-0.1 - 1))^(-1 / 0.1) for u
    uniform in [0, 1), then id = floor(r) - 1.

    Args:
        rows: Integer. The vocabulary size.
        shape: Tuple of integers. The shape of the ids.
        rng: `np.random.Generator` drawing the uniforms (`rng.random`).
    """
    top = (rows + 1.0) ** -0.1
    ranks = (1.0 + rng.random(shape) * (top - 1.0)) ** (1.0 / -0.1)
    return np.minimum(ranks.astype(np.int64) - 1, rows - 1).astype(np.int32)


def mlp(embedding, shape=(26,), dtype="int32"):
    """inputs -> `embedding` -> Flatten -> Dense 256, 128 (ReLU) -> sigmoid.

    Args:
        embedding: The embedding layer (or `Identity` for looked-up rows).
        shape: Tuple. One example's input shape.
        dtype: String. The input dtype.

    Returns:
        An uncompiled functional model.
    """
    inputs = keras.Input(shape, dtype=dtype)
    x = keras.layers.Flatten()(embedding(inputs))
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1, "sigmoid")(x))
