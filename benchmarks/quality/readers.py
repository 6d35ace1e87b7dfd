"""The data sets of the quality benchmark, as batched train / val / test.

`load_data(args, seed)` gives one split per seed: batches of
`({"categorical": ids[, "numeric": x]}, labels)`, the ids of every field
in one shared vocabulary ordered by frequency. The real samples are read
with `keras_mpe.datasets`' readers, the synthetic data streamed from its
Criteo-like generator.
"""

import dataclasses
import functools
import pathlib

import numpy as np
import tensorflow as tf

from keras_mpe import datasets

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
SAMPLES = {
    "criteo": (datasets.read_criteo, "criteo/criteo_dac_head8000.txt"),
    "avazu": (datasets.read_avazu, "avazu/avazu_train_head8999.csv"),
    "kdd12": (datasets.read_kdd12, "kdd12/kdd12_click_prediction_small.csv"),
    "movielens": (datasets.read_movielens, "movielens/ml-100k"),
}


@dataclasses.dataclass
class Data:
    """One split: train / val / test batches and what to monitor.

    Args:
        train, val, test: `tf.data.Dataset`s of `(features, labels)`.
        vocabulary_size: Integer. Rows of the one shared table.
        rating: Boolean. A regression (RMSE) instead of CTR (AUC, LogLoss).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    vocabulary_size: int
    rating: bool

    @property
    def monitor(self) -> str:
        """The validation metric that picks the best epoch."""
        return "val_rmse" if self.rating else "val_auc"

    @property
    def mode(self) -> str:
        """The direction of `monitor`: "min" for RMSE, "max" for AUC."""
        return "min" if self.rating else "max"


def load_data(args, seed: int) -> Data:
    """The split of `args.data` for `seed`, in batches of `args.batch_size`.

    Raises SystemExit naming the path when a real sample is absent.
    """
    if args.data == "synthetic":
        return synthetic_data(args, seed)
    reader, relative = SAMPLES[args.data]
    path = pathlib.Path(args.path) if args.path else SHARED / relative
    if not path.exists():
        raise SystemExit(f"{path} is absent: pass --path or --data synthetic")
    raw = reader(path, seed=seed)
    if args.data == "movielens":
        users = raw["vocabulary_sizes"]["user_id"]
        vocabulary = users + raw["vocabulary_sizes"]["movie_id"]
        for part in ("train", "val", "test"):
            features, ratings = raw[part]
            ids = np.stack(
                [features["user_id"], features["movie_id"] + users], axis=1
            )
            raw[part] = (ids, ratings)
    else:
        vocabulary = raw["vocabulary_size"]

    def batches(part, shuffle=False):
        ids, labels = raw[part]
        data = tf.data.Dataset.from_tensor_slices(
            ({"categorical": ids}, labels)
        )
        if shuffle:
            data = data.shuffle(len(ids), seed=seed)
        return data.batch(args.batch_size).cache()

    return Data(
        batches("train", shuffle=True),
        batches("val"),
        batches("test"),
        vocabulary,
        rating=args.data == "movielens",
    )


def synthetic_data(args, seed: int) -> Data:
    """The built-in generator, ids re-ranked by their training counts.

    The generator's ids follow its Zipf ranks; a deployment's vocabulary
    (an adapted StringLookup) follows the counts of the data it was
    adapted on. Re-ranking by the training split's counts gives that
    frequency order, which is what the packed tables' compact index needs.
    Validation and test are the next `args.rows // 10` rows each.
    """
    held_out = max(args.rows // 10, 1)
    vocabulary = sum(datasets.field_cardinalities(args.max_cardinality))
    generate = functools.partial(
        datasets.criteo_like,
        batch_size=args.batch_size,
        max_cardinality=args.max_cardinality,
        seed=seed,
    )
    counts = np.zeros(vocabulary, np.int64)
    for features, _ in generate(args.rows).as_numpy_iterator():
        counts += np.bincount(
            features["categorical"].ravel(), minlength=vocabulary
        )
    rank = np.empty(vocabulary, np.int32)
    rank[np.argsort(-counts, kind="stable")] = np.arange(vocabulary)
    rank = tf.constant(rank)

    def reranked(features, labels):
        ids = tf.gather(rank, features["categorical"])
        numeric = tf.math.log1p(features["numeric"])
        return {"categorical": ids, "numeric": numeric}, labels

    def ready(rows, first_row):
        return generate(rows, first_row=first_row).map(reranked).cache()

    return Data(
        ready(args.rows, 0),
        ready(held_out, args.rows),
        ready(held_out, args.rows + held_out),
        vocabulary,
        rating=False,
    )
