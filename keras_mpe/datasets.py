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

import csv
import os

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


def _encode_fields(
    tokens, labels, min_count, train_fraction, seed, shared=True
) -> dict:
    """Splits rows at random and maps each (field, token) to an id.

    A field's tokens seen fewer than `min_count` times in the training rows
    share the field's OOV token. Ids rank tokens by training count, most
    frequent first (ties by field, then OOV, then token), over all fields
    together when `shared` (one table), else within each field.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(
            "`train_fraction` must be between 0 and 1. "
            f"Received: train_fraction={train_fraction}"
        )
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(
            "`min_count` must be a positive integer. "
            f"Received: min_count={min_count}"
        )
    tokens = np.asarray(tokens, dtype=str)
    order = np.random.default_rng(seed).permutation(len(tokens))
    cut = int(len(tokens) * train_fraction)
    val_cut = cut + (len(tokens) - cut) // 2
    entries = []  # (-count, field, is_token, token) per vocabulary entry
    for field in range(tokens.shape[1]):
        values, counts = np.unique(
            tokens[order[:cut], field], return_counts=True
        )
        rare = counts < min_count
        entries.append((-int(counts[rare].sum()), field, 0, ""))  # OOV
        entries += [
            (-int(c), field, 1, v)
            for v, c in zip(values[~rare], counts[~rare], strict=True)
        ]
    entries.sort()
    next_id = {}
    index = {}
    for _, field, is_token, token in entries:
        key = None if shared else field  # one id space, or one per field
        rank = next_id.get(key, 0)
        next_id[key] = rank + 1
        index[(field, is_token, token)] = rank
    ids = np.zeros(tokens.shape, np.int32)
    for field in range(tokens.shape[1]):
        oov = index[(field, 0, "")]
        ids[:, field] = [
            index.get((field, 1, token), oov) for token in tokens[:, field]
        ]
    parts = {
        "train": order[:cut],
        "val": order[cut:val_cut],
        "test": order[val_cut:],
    }
    result = {name: (ids[p], labels[p]) for name, p in parts.items()}
    if shared:
        result["vocabulary_size"] = len(index)
    else:
        result["vocabulary_sizes"] = [
            next_id[f] for f in range(tokens.shape[1])
        ]
    result["oov_ids"] = np.array(
        [index[(f, 0, "")] for f in range(tokens.shape[1])], np.int32
    )
    return result


def _checked_rows(path, rows, width, what):
    if not rows or any(len(row) != width for row in rows):
        bad = next((len(r) for r in rows if len(r) != width), 0)
        raise ValueError(
            f"`path` must be {what} with {width} fields per line. "
            f"Received: {path} with a line of {bad} fields"
        )
    return rows


_SPLIT_ARGS = """
        min_count: Integer. Values seen fewer times in the training rows
            share their field's out-of-vocabulary id.
        train_fraction: Float. Share of the rows (shuffled with `seed`)
            used for training; the rest is split evenly into validation
            and test, as the reference's random 80/10/10 split.
        seed: Integer. Seed of the split.

    Returns:
        A dict with "train", "val", "test": `(ids int32 (rows, fields),
        labels float32 (rows, 1))`, "vocabulary_size" (one table shared
        by all fields) and "oov_ids" (each field's out-of-vocabulary id).
        Ids are frequency ordered: id 0 is the (field, value) seen most
        often in the training rows, as in the vocabulary of an adapted
        StringLookup, which is what gives packed tables their compact
        index (see `keras_mpe.FixedBitEmbedding`).
"""


def read_criteo(
    path, min_count: int = 2, train_fraction: float = 0.8, seed: int = 0
) -> dict:
    """Reads a Kaggle Criteo TSV (label, I1-I13, C1-C26) as 39 id fields.

    Numeric values are bucketed as in the MPE reference: v -> floor(ln(v)^2)
    when v > 2, else v; an empty value is its own token.

    Args:
        path: Path of the tab-separated file (no header).
    """
    with open(path) as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    _checked_rows(path, rows, 40, "a Criteo TSV")
    labels = np.array([[float(row[0])] for row in rows], np.float32)
    tokens = [
        [_criteo_numeric_token(v) for v in row[1:14]] + row[14:] for row in rows
    ]
    return _encode_fields(tokens, labels, min_count, train_fraction, seed)


def _read_csv(path, width, what):
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) is None:  # the header line
            raise ValueError(
                f"`path` must be {what}. Received: {path} is empty"
            )
        rows = list(reader)
    return _checked_rows(path, rows, width, what)


def _read_labelled_csv(path, width, what, label, min_count, fraction, seed):
    """A CSV whose column `label` is the click and every later column a
    categorical token."""
    rows = _read_csv(path, width, what)
    labels = np.array([[float(row[label])] for row in rows], np.float32)
    tokens = [row[label + 1 :] for row in rows]
    return _encode_fields(tokens, labels, min_count, fraction, seed)


def read_avazu(
    path, min_count: int = 2, train_fraction: float = 0.8, seed: int = 0
) -> dict:
    """Reads a Kaggle Avazu CSV (id, click, hour, C1, ... C21): 22 id fields.

    Every column but `id` and the `click` label is categorical.

    Args:
        path: Path of the CSV file with its header line.
    """
    return _read_labelled_csv(
        path, 24, "an Avazu CSV", 1, min_count, train_fraction, seed
    )


def read_kdd12(
    path, min_count: int = 2, train_fraction: float = 0.8, seed: int = 0
) -> dict:
    """Reads the KDD Cup 2012 track 2 OpenML CSV (click, impression, ...).

    The 11 columns after the `click` label (the impression count and the
    10 id columns) are categorical tokens.

    Args:
        path: Path of the CSV file with its header line.
    """
    return _read_labelled_csv(
        path,
        12,
        "a KDD12 Click_prediction_small CSV",
        0,
        min_count,
        train_fraction,
        seed,
    )


for _reader in (read_criteo, read_avazu, read_kdd12):
    _reader.__doc__ += _SPLIT_ARGS


def read_movielens(
    directory, train_fraction: float = 0.8, seed: int = 0
) -> dict:
    """Reads MovieLens 100K ratings (`u.data`: user, item, rating, time).

    Args:
        directory: The ml-100k folder holding `u.data`.
        train_fraction: Float. Share of the ratings (shuffled with `seed`)
            used for training; the rest is split evenly into validation
            and test.
        seed: Integer. Seed of the split.

    Returns:
        A dict with "train", "val", "test": `({"user_id": int32 (rows,),
        "movie_id": int32 (rows,)}, ratings float32 (rows, 1))` and
        "vocabulary_sizes" `{"user_id": n, "movie_id": m}`. Ids are
        frequency ordered per field (id 0 the most rated); the OOV id,
        for users or movies absent from the training rows, comes last.
    """
    path = os.path.join(directory, "u.data")
    with open(path) as handle:
        rows = [line.split("\t") for line in handle if line.strip()]
    _checked_rows(path, rows, 4, "a MovieLens u.data file")
    ratings = np.array([[float(row[2])] for row in rows], np.float32)
    encoded = _encode_fields(
        [row[:2] for row in rows], ratings, 1, train_fraction, seed, False
    )
    names = ("user_id", "movie_id")
    result = {
        "vocabulary_sizes": dict(
            zip(names, encoded["vocabulary_sizes"], strict=True)
        )
    }
    for part in ("train", "val", "test"):
        ids, labels = encoded[part]
        features = {name: ids[:, i] for i, name in enumerate(names)}
        result[part] = (features, labels)
    return result
