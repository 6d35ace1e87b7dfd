"""A built-in, seeded generator of Criteo-like click-through data.

Rows are generated batch by batch inside `tf.data` from stateless random
ops, so any number of rows streams without being held in memory, and the
same seed always gives the same rows.

Each of the 26 categorical fields draws its value's frequency rank r from a
Zipf-like law truncated at the field's cardinality (P(r) ~ r^-s, sampled by
inverting the continuous CDF). The row id of rank r is the field's offset
plus r, so ids are frequency ordered within each field, as a vocabulary
built by an adapted StringLookup is. Labels follow a hidden logistic model:

    logit = bias + sum over fields of w_f(r_f) + dense effect
    w_f(r) = signal * u(f, r) * head / (head + r)

where u(f, r) is a fixed pseudo-random number in [-1, 1]: frequent values
carry most of the signal, rare ones almost none (their share of the label
is noise). The 13 numeric fields are log-normal counts with a small linear
effect. Cardinalities default to those of the Criteo Kaggle data as used
by DLRM-style setups (C1..C26), capped by `max_cardinality`.
"""

import numpy as np
import tensorflow as tf

CRITEO_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
    8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
    286181, 105, 142572,
)  # fmt: skip
NUM_DENSE = 13
_MASK32 = 0xFFFFFFFF


def field_cardinalities(max_cardinality=None) -> tuple:
    """The per-field vocabulary sizes, each capped at `max_cardinality`."""
    if max_cardinality is None:
        return CRITEO_CARDINALITIES
    if not isinstance(max_cardinality, int) or max_cardinality < 2:
        raise ValueError(
            "`max_cardinality` must be an integer >= 2 or None. "
            f"Received: max_cardinality={max_cardinality}"
        )
    return tuple(min(c, max_cardinality) for c in CRITEO_CARDINALITIES)


def _hash_unit(values):
    """A fixed pseudo-random number in [0, 1) for each int64 value."""
    mask = tf.constant(_MASK32, tf.int64)

    def mix(x):
        return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))

    x = tf.bitwise.bitwise_and(values, mask)
    for _ in range(2):
        x = tf.bitwise.bitwise_and(mix(x) * 0x45D9F3B, mask)
    return tf.cast(mix(x), tf.float32) / float(2**32)


def _zipf_ranks(uniform, cardinalities, exponent):
    """Inverse-CDF draws of ranks 0..n-1 with P(r) ~ (r + 1)^-exponent."""
    n = tf.constant(cardinalities, tf.float64)
    one_minus_s = 1.0 - exponent
    top = tf.pow(n + 1.0, one_minus_s)
    draws = tf.pow(
        1.0 + tf.cast(uniform, tf.float64) * (top - 1.0), 1.0 / one_minus_s
    )
    ranks = tf.cast(tf.floor(draws), tf.int64) - 1
    return tf.clip_by_value(ranks, 0, tf.cast(n, tf.int64) - 1)


def criteo_like(
    num_rows: int,
    batch_size: int = 1024,
    max_cardinality=None,
    zipf_exponent: float = 1.1,
    signal: float = 1.0,
    head: float = 30.0,
    first_row: int = 0,
    seed: int = 0,
) -> tf.data.Dataset:
    """Streams seeded Criteo-like CTR batches.

    Example:

    ```python
    train = keras_mpe.datasets.criteo_like(1_000_000, max_cardinality=10**5)
    test = keras_mpe.datasets.criteo_like(100_000, first_row=1_000_000,
                                          max_cardinality=10**5)
    ```

    Args:
        num_rows: Integer. Rows to generate.
        batch_size: Integer. Rows per batch (the last batch may be smaller).
        max_cardinality: Integer or None. Cap on every field's vocabulary.
        zipf_exponent: Float > 1. Skew of the value frequencies.
        signal: Float. Scale of the hidden per-value label weights.
        head: Float. Rank scale under which values carry signal.
        first_row: Integer. Index of the first row (for disjoint splits:
            rows depend on their index and the seed only).
        seed: Integer. Seed of the whole data set.

    Returns:
        A `tf.data.Dataset` of `({"categorical": int32 (batch, 26) global
        ids, "numeric": float32 (batch, 13)}, float32 (batch, 1) labels)`.
        Global id = field offset + frequency rank; the vocabulary size is
        `sum(field_cardinalities(max_cardinality))`.
    """
    if num_rows < 1 or batch_size < 1:
        raise ValueError(
            "`num_rows` and `batch_size` must be positive. Received: "
            f"num_rows={num_rows}, batch_size={batch_size}"
        )
    if not zipf_exponent > 1.0:
        raise ValueError(
            "`zipf_exponent` must be greater than 1. "
            f"Received: zipf_exponent={zipf_exponent}"
        )
    cardinalities = field_cardinalities(max_cardinality)
    offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]])
    num_fields = len(cardinalities)

    def make_batch(start):
        size = tf.minimum(
            tf.constant(batch_size, tf.int64), first_row + num_rows - start
        )
        key = tf.stack([tf.constant(seed, tf.int64), start])
        uniform = tf.random.stateless_uniform([size, num_fields], key)
        ranks = _zipf_ranks(uniform, cardinalities, zipf_exponent)
        ids = ranks + tf.constant(offsets, tf.int64)
        sign = 2.0 * _hash_unit(ids * 1000003 + seed) - 1.0
        weights = signal * sign * head / (head + tf.cast(ranks, tf.float32))
        dense = tf.exp(
            tf.random.stateless_normal([size, NUM_DENSE], key + 1) * 1.5
        )
        dense = tf.floor(dense)
        dense_sign = (
            2.0 * _hash_unit(tf.range(NUM_DENSE, dtype=tf.int64) + seed * 7919)
            - 1.0
        )
        dense_effect = 0.3 * tf.reduce_mean(
            tf.math.log1p(dense) * dense_sign, axis=1
        )
        logit = -1.3 + tf.reduce_sum(weights, axis=1) / 2.0 + dense_effect
        noise = tf.random.stateless_uniform([size], key + 2)
        labels = tf.cast(noise < tf.sigmoid(logit), tf.float32)
        features = {"categorical": tf.cast(ids, tf.int32), "numeric": dense}
        return features, labels[:, None]

    starts = tf.data.Dataset.range(first_row, first_row + num_rows, batch_size)
    return starts.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)


def _criteo_numeric_token(value: str) -> str:
    """The reference bucketing: v -> floor(ln(v)^2) if v > 2, else v."""
    if value == "":
        return ""
    number = int(value)
    if number > 2:
        return str(int(np.floor(np.log(number) ** 2)))
    return str(number)


def read_criteo(
    path, min_count: int = 2, train_fraction: float = 0.8, seed: int = 0
) -> dict:
    """Reads a Kaggle Criteo TSV (label, I1-I13, C1-C26) as 39 id fields.

    Preprocessing as in the MPE reference: numeric values are bucketed to
    floor(ln(v)^2) when v > 2, and every field's values seen fewer than
    `min_count` times in the training rows map to that field's
    out-of-vocabulary id. Within a field, ids are ordered by training
    frequency (most frequent first), so the vocabulary is frequency
    ordered; field f's ids start at `offsets[f]`.

    Args:
        path: Path of the tab-separated file (no header).
        min_count: Integer. Rarer values share the field's OOV id.
        train_fraction: Float. Share of the rows (shuffled with `seed`)
            used for training; the rest is split evenly into validation
            and test, as the reference's random 80/10/10 split.
        seed: Integer. Seed of the split.

    Returns:
        A dict with "train", "val", "test": `(ids int32 (rows, 39),
        labels float32 (rows, 1))`, and "vocabulary_size".
    """
    with open(path) as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    if not rows or any(len(row) != 40 for row in rows):
        bad = next((len(r) for r in rows if len(r) != 40), 0)
        raise ValueError(
            f"`path` must be a Criteo TSV with 40 fields per line. "
            f"Received: {path} with a line of {bad} fields"
        )
    labels = np.array([[float(row[0])] for row in rows], np.float32)
    tokens = [
        [_criteo_numeric_token(v) for v in row[1:14]] + row[14:] for row in rows
    ]
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(len(rows) * train_fraction)
    val_cut = cut + (len(rows) - cut) // 2
    train_rows = set(order[:cut].tolist())
    ids = np.zeros((len(rows), 39), np.int32)
    offset = 0
    for field in range(39):
        column = [row[field] for row in tokens]
        counts = {}
        for i in train_rows:
            counts[column[i]] = counts.get(column[i], 0) + 1
        kept = sorted(
            (v for v, c in counts.items() if c >= min_count),
            key=lambda v: (-counts[v], v),
        )
        index = {value: offset + 1 + rank for rank, value in enumerate(kept)}
        ids[:, field] = [index.get(value, offset) for value in column]
        offset += len(kept) + 1
    parts = {
        "train": order[:cut],
        "val": order[cut:val_cut],
        "test": order[val_cut:],
    }
    result = {name: (ids[p], labels[p]) for name, p in parts.items()}
    result["vocabulary_size"] = offset
    return result
