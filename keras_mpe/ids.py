"""The ids an embedding layer receives: checked before they are used.

An id outside [0, input_dim) is an error, never another row. The check
runs on the ids as given, before any cast: an int64 id 2^32 + 5 cast to
int32 first would read row 5. Under XLA (`jit_compile=True`) TensorFlow
compiles assertions away, so there the ids are not checked.
"""

import tensorflow as tf


def checked_ids(inputs, input_dim: int, layer):
    """`inputs` as int32 ids, failing when one is outside [0, input_dim).

    Args:
        inputs: Integer (or float, as Keras' Embedding accepts) tensor.
        input_dim: Integer. The vocabulary size.
        layer: The layer that looks the ids up (named in the error).

    Returns:
        int32 tensor shaped like `inputs`.

    Raises:
        tf.errors.InvalidArgumentError: when an id is negative or at
            least `input_dim` (eagerly, or when the graph runs).
    """
    ids = tf.convert_to_tensor(inputs)
    if ids.dtype.is_integer:
        # Wide enough for every integer id; uint64 ids past 2^63 turn
        # negative, which the check refuses too.
        wide = tf.cast(ids, tf.int64)
    else:
        wide = tf.cast(ids, tf.float64)
    message = (
        f"{type(layer).__name__} '{layer.name}': every id must be in "
        f"[0, input_dim={input_dim})."
    )
    checks = [
        tf.debugging.assert_non_negative(wide, message=message),
        tf.debugging.assert_less(
            wide, tf.cast(input_dim, wide.dtype), message=message
        ),
    ]
    with tf.control_dependencies(checks):
        # An identity: a cast of int32 ids adds no op to depend on.
        return tf.identity(tf.cast(ids, tf.int32))
