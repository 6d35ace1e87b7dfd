"""The ids an embedding layer receives, and how their rows are returned.

Both keras_mpe layers take the ids recommenders feed:

| ids                     | no combiner                | a combiner     |
|-------------------------|----------------------------|----------------|
| dense `(..., n)`        | `(..., n, dim)`            | `(..., dim)`   |
| ragged `(batch, None)`  | ragged `(batch, None, dim)`| `(batch, dim)` |
| sparse `(batch, n)`     | refused                    | `(batch, dim)` |

A combiner pools the rows of each example's ids over the last axis, as
`tf.nn.safe_embedding_lookup_sparse` does: "sum", "mean" (divided by the
number of ids) or "sqrtn" (divided by its square root); an example with
no id gives zeros. With `mask_zero=True`, id 0 is padding: it has no row
(its output is zeros), is not pooled (nor counted by "mean" / "sqrtn"),
is not counted in frequencies, and dense outputs carry the mask
`ids != 0`.

An id outside [0, input_dim) is an error, never another row. The check
runs on the ids as given, before any cast: an int64 id 2^32 + 5 cast to
int32 first would read row 5. Under XLA (`jit_compile=True`) TensorFlow
compiles assertions away, so there the ids are not checked.
"""

import tensorflow as tf

COMBINERS = (None, "sum", "mean", "sqrtn")


def check_combiner(combiner):
    """Raises a ValueError unless `combiner` is one of `COMBINERS`."""
    if combiner not in COMBINERS:
        raise ValueError(
            f"`combiner` must be one of {COMBINERS}. "
            f"Received: combiner={combiner!r}"
        )


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
    message = (
        f"{type(layer).__name__} '{layer.name}': every id must be in "
        f"[0, input_dim={input_dim})."
    )
    if ids.dtype.is_integer:
        # One comparison over the ids (the check runs in every serving
        # call): as unsigned integers, negative ids wrap past any
        # input_dim, and a cast to a type as wide keeps every other id.
        unsigned = tf.uint64 if ids.dtype.size == 8 else tf.uint32
        checks = [
            tf.debugging.assert_less(
                tf.cast(ids, unsigned),
                tf.cast(input_dim, unsigned),
                message=message,
            )
        ]
    else:
        wide = tf.cast(ids, tf.float64)
        checks = [
            tf.debugging.assert_non_negative(wide, message=message),
            tf.debugging.assert_less(
                wide, tf.cast(input_dim, wide.dtype), message=message
            ),
        ]
    with tf.control_dependencies(checks):
        # An identity: a cast of int32 ids adds no op to depend on.
        return tf.identity(tf.cast(ids, tf.int32))


def _values(inputs):
    """The ids of a dense, ragged or sparse input, as a flat vector."""
    if isinstance(inputs, tf.SparseTensor):
        return inputs.values
    if isinstance(inputs, tf.RaggedTensor):
        return inputs.flat_values
    return tf.reshape(inputs, [-1])


def counted_ids(inputs, layer):
    """The checked ids of `inputs` that count as lookups (no padding)."""
    ids = checked_ids(_values(inputs), layer.input_dim, layer)
    if layer.mask_zero:
        ids = tf.boolean_mask(ids, tf.not_equal(ids, 0))
    return ids


def _pool(rows, weights, segments, num_segments, combiner):
    """Per segment: the weighted sum of its rows, scaled by `combiner`."""
    sums = tf.math.unsorted_segment_sum(
        rows * weights[:, None], segments, num_segments
    )
    if combiner == "sum":
        return sums
    counts = tf.math.unsorted_segment_sum(weights, segments, num_segments)
    if combiner == "sqrtn":
        counts = tf.sqrt(counts)
    return tf.math.divide_no_nan(sums, counts[:, None])


def embed(inputs, rows_of, layer):
    """The layer's output for `inputs` (see the module docstring).

    Args:
        inputs: Dense, ragged or sparse ids.
        rows_of: Function of a flat int32 id vector returning its rows,
            float32 `(n, layer.output_dim)`.
        layer: The layer (its `input_dim`, `output_dim`, `combiner`,
            `mask_zero`, `compute_dtype` and name are used).

    Returns:
        The rows or their pools, in the layer's compute dtype.
    """
    combiner = layer.combiner
    ids = checked_ids(_values(inputs), layer.input_dim, layer)
    rows = rows_of(ids)
    weights = tf.ones_like(ids, rows.dtype)
    if layer.mask_zero:
        weights = tf.cast(tf.not_equal(ids, 0), rows.dtype)
        rows = rows * weights[:, None]
    if isinstance(inputs, tf.SparseTensor):
        if combiner is None or inputs.shape.rank != 2:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': SparseTensor ids "
                "must be (batch, ids per example) and need a `combiner` "
                f"to pool them. Received: combiner={combiner!r}, ids of "
                f"shape {inputs.shape}"
            )
        segments = inputs.indices[:, 0]
        outputs = _pool(
            rows, weights, segments, inputs.dense_shape[0], combiner
        )
    elif isinstance(inputs, tf.RaggedTensor):
        if combiner is None:
            outputs = inputs.with_flat_values(rows)
        elif inputs.shape.rank != 2:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': ragged ids pooled "
                "by a `combiner` must be (batch, None). Received: ids of "
                f"shape {inputs.shape}"
            )
        else:
            segments = inputs.value_rowids()
            outputs = _pool(rows, weights, segments, inputs.nrows(), combiner)
    else:
        shape = tf.shape(inputs)
        if combiner is None:
            outputs = tf.reshape(
                rows, tf.concat([shape, [layer.output_dim]], 0)
            )
        elif inputs.shape.rank is not None and inputs.shape.rank < 2:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': with a `combiner`, "
                "dense ids must have a last axis to pool, (batch, ids per "
                f"example). Received: ids of shape {inputs.shape}"
            )
        else:
            outer = shape[:-1]
            examples = tf.reduce_prod(outer)
            segments = tf.repeat(tf.range(examples), shape[-1])
            pooled = _pool(rows, weights, segments, examples, combiner)
            outputs = tf.reshape(
                pooled, tf.concat([outer, [layer.output_dim]], 0)
            )
    return tf.cast(outputs, layer.compute_dtype)


def output_shape(input_shape, layer) -> tuple:
    """The static output shape for ids of `input_shape`."""
    if layer.combiner is None:
        return tuple(input_shape) + (layer.output_dim,)
    return tuple(input_shape)[:-1] + (layer.output_dim,)


def output_mask(inputs, layer):
    """The Keras mask of the layer's output: `ids != 0` for dense ids
    with `mask_zero` and no combiner; None otherwise."""
    if not layer.mask_zero or layer.combiner is not None:
        return None
    if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
        return None
    return tf.not_equal(inputs, 0)
