"""A TensorFlow Recommenders retrieval model on MovieLens 100K with MPE.

A two-tower model: a user tower and a movie tower, each one
MixedPrecisionEmbedding table, trained with `tfrs.tasks.Retrieval`
(in-batch softmax) and evaluated with `tfrs.metrics.FactorizedTopK` over
every movie. `model.fit` with `MPECallback` searches each tower's bits and
retrains; each model keeps its best validation recall@100 epoch (MPE: the
best retraining epoch). The towers are then converted to packed tables (in
place), a `BruteForce` index over the converted movie tower's embeddings
of all movies answers "the top-k movies for a user", and that index is
exported for TF Serving, loaded in a fresh process (TensorFlow only, no
keras_mpe) and checked against the in-process one. Prints test recall@10,
@50 and @100 of float embeddings vs MPE, and the compression of both
towers.

Ids are those of `keras_mpe.datasets.read_movielens`: per field, ordered
by rating count in the training rows (0 = the most rated), so each
frequency group is one id range. The served model takes and returns them.

TFRS needs Keras 2 (tf_keras): this script sets TF_USE_LEGACY_KERAS=1.

    python examples/tfrs_retrieval.py --data ../shared/data/movielens/ml-100k

`--data` is the ml-100k folder holding u.data (from
https://grouplens.org/datasets/movielens/100k/).
"""

import json
import os
import pathlib
import subprocess
import sys

from absl import flags

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import datasets  # noqa: E402

keras = tf.keras  # tf_keras: TFRS refuses Keras 3 when imported
DEFAULT_DATA = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared/data/movielens/ml-100k"
)
KS = (10, 50, 100)  # recall@k reported
MONITOR = "val_factorized_top_k/top_100_categorical_accuracy"
SHOWN_USERS = [0, 1, 2]  # the three most active users
FLAGS = flags.FLAGS

# Run by a fresh Python that cannot import keras_mpe: the SavedModel needs
# TensorFlow only. Prints the served top-k movie ids of the given users.
SERVE = """
import json, sys
sys.modules["keras_mpe"] = None
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
users = tf.constant(json.loads(sys.argv[2]), tf.int32)
print(json.dumps(serve(user_id=users)["movie_ids"].numpy().tolist()))
"""


def define_flags():
    """The command line. Defined when run as a script, not on import."""
    import example_flags  # examples/ is first on sys.path in a script

    flags.DEFINE_string(
        "data",
        str(DEFAULT_DATA),
        "The MovieLens 100K folder (ml-100k) holding u.data.",
    )
    example_flags.define_export_dir("tfrs_retrieval")
    example_flags.define_training(
        epochs=3,
        epochs_help="Training epochs of the fp32 model, and retraining "
        "epochs of MPE after the search (MPE trains search-epochs + epochs "
        "in all).",
        search_epochs=3,
        batch_size=1024,
        batch_help="Ratings per batch (the in-batch negatives of each "
        "positive).",
        dim=32,
        num_groups=32,
        learning_rate=1e-2,
    )
    flags.DEFINE_integer(
        "top-k", 10, "Movies the served model returns per user.", lower_bound=5
    )
    # Listed by --help with this script's own flags.
    flags.adopt_module_key_flags(example_flags)


def candidates(movie_model, movies):
    """`(movie ids, embeddings)` batches of every movie, 0..movies-1."""
    ids = tf.data.Dataset.from_tensor_slices(tf.range(movies)).batch(256)
    return ids.map(lambda batch: (batch, movie_model(batch)))


class RetrievalModel(tfrs.models.Model):
    """Score(user, movie) = user embedding . movie embedding.

    Args:
        make_embedding: Callable taking a vocabulary size and a name and
            returning the embedding layer (the tower) of that feature.
        vocabulary_sizes: Dict of `{"user_id": users, "movie_id": movies}`.
    """

    def __init__(self, make_embedding, vocabulary_sizes):
        super().__init__()
        self.user_model = make_embedding(
            vocabulary_sizes["user_id"], "user_embedding"
        )
        self.movie_model = make_embedding(
            vocabulary_sizes["movie_id"], "movie_embedding"
        )
        self.task = tfrs.tasks.Retrieval(
            # A mean over the batch, as in the other examples, so that the
            # bit penalty weighs the same against it.
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            # Id-based recall (by scores, tied scores would all count as
            # retrieved: a pruned, all-zero table would score 1.0).
            metrics=tfrs.metrics.FactorizedTopK(
                candidates(self.movie_model, vocabulary_sizes["movie_id"]),
                ks=KS,
            ),
        )

    def call(self, features):
        return (
            self.user_model(features["user_id"]),
            self.movie_model(features["movie_id"]),
        )

    def compute_loss(self, features, training=False):
        users, movies = self(features)
        return self.task(
            users,
            movies,
            candidate_sampling_probability=features["movie_probability"],
            candidate_ids=features["movie_id"],
            compute_metrics=not training,
        )


class TopMovies(keras.Model):
    """The served model: a user id -> the top-k movie ids and scores."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def call(self, features):
        scores, movie_ids = self.index(features["user_id"])
        return {"scores": scores, "movie_ids": movie_ids}


def load(args):
    if not (pathlib.Path(args.data) / "u.data").exists():
        raise SystemExit(
            f"--data {args.data}: no u.data there. Download ml-100k from "
            "https://grouplens.org/datasets/movielens/100k/ and pass its "
            "folder."
        )
    raw = datasets.read_movielens(args.data, seed=args.seed)
    # The in-batch negatives are the batch's movies, drawn by popularity;
    # the loss subtracts log(probability) from their scores (logQ
    # correction), so that scores rank movies by p(movie | user).
    counts = np.bincount(
        raw["train"][0]["movie_id"],
        minlength=raw["vocabulary_sizes"]["movie_id"],
    )
    probability = (np.maximum(counts, 1) / counts.sum()).astype(np.float32)

    def batches(part):
        features, _ = raw[part]  # every rating is a positive pair
        movie_probability = probability[features["movie_id"]]
        return (
            tf.data.Dataset.from_tensor_slices(
                {**features, "movie_probability": movie_probability}
            )
            .batch(args.batch_size)
            .cache()
        )

    return (
        {part: batches(part) for part in ("train", "val", "test")},
        raw["vocabulary_sizes"],
    )


def train(model, data, args, epochs, callbacks=(), first_kept_epoch=0):
    """Fits, then keeps the weights of the best validation epoch from
    `first_kept_epoch` on (MPE: the first retraining epoch); returns the
    test recall@k for each k in KS."""
    keras.utils.set_random_seed(args.seed)
    model.compile(keras.optimizers.Adam(args.learning_rate))
    best_epoch = keras.callbacks.EarlyStopping(
        monitor=MONITOR,
        mode="max",
        patience=epochs,  # never stops early, only restores the best
        start_from_epoch=first_kept_epoch,
        restore_best_weights=True,
        verbose=1,
    )
    model.fit(
        data["train"],
        validation_data=data["val"],
        epochs=epochs,
        callbacks=[*callbacks, best_epoch],
        verbose=2,
    )
    scores = model.evaluate(data["test"], return_dict=True, verbose=0)
    return [
        scores[f"factorized_top_k/top_{k}_categorical_accuracy"] for k in KS
    ]


def recall_line(name, recalls):
    return f"{name}: " + "  ".join(
        f"recall@{k} {r:.4f}" for k, r in zip(KS, recalls, strict=True)
    )


def main(args):
    data, sizes = load(args)
    print(f"vocabulary sizes: {sizes}, embedding dim {args.dim}")

    print("\n== fp32 embeddings ==")
    keras.utils.set_random_seed(args.seed)
    fp32 = RetrievalModel(
        lambda n, name: keras.layers.Embedding(n, args.dim, name=name), sizes
    )
    fp32_recalls = train(fp32, data, args, args.epochs)

    print("\n== Mixed-Precision Embeddings ==")
    keras.utils.set_random_seed(args.seed)
    model = RetrievalModel(
        lambda n, name: keras_mpe.MixedPrecisionEmbedding(
            n,
            args.dim,
            num_groups=args.num_groups,
            name=name,
            **example_flags.search_knobs(args),
        ),
        sizes,
    )
    callback = keras_mpe.MPECallback(
        frequency_data=data["train"],
        search_epochs=args.search_epochs,
        monitor=MONITOR,
    )
    mpe_recalls = train(
        model,
        data,
        args,
        args.search_epochs + args.epochs,
        [callback],
        first_kept_epoch=args.search_epochs,
    )

    print("\n== convert, report, index, export ==")
    keras_mpe.convert(model, layout=args.layout)  # TFRS models: in place
    report = keras_mpe.compression_report(model)
    print(report)
    # The index: every movie's embedding from the converted movie tower;
    # queries go through the converted user tower (packed in the export).
    # BruteForce keeps the movies' embeddings as a float32 matrix.
    index = tfrs.layers.factorized_top_k.BruteForce(
        model.user_model, k=args.top_k
    )
    index.index_from_dataset(candidates(model.movie_model, sizes["movie_id"]))
    serving_model = TopMovies(index)
    users = tf.constant(SHOWN_USERS, tf.int32)
    expected = serving_model({"user_id": users})["movie_ids"].numpy()
    path = keras_mpe.export_saved_model(
        serving_model,
        args.export_dir,
        signature={"user_id": tf.TensorSpec([None], tf.int32)},
        overwrite=True,
    )
    print(f"SavedModel written to {path}")
    served = subprocess.run(
        [sys.executable, "-c", SERVE, path, json.dumps(SHOWN_USERS)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    served = np.array(json.loads(served.stdout.splitlines()[-1]))
    for user, top in zip(SHOWN_USERS, served, strict=True):
        print(f"user {user}: top-5 movie ids {top[:5].tolist()}")
    same = np.array_equal(served, expected)
    print(f"served top-{args.top_k} equals the in-process index's: {same}")

    print("\n== test recall@k (each model at its best validation epoch) ==")
    print(recall_line("fp32           ", fp32_recalls))
    print(recall_line("MPE (retrained)", mpe_recalls))
    for layer in report.layers:
        print(
            f"{layer.name}: {layer.payload_bits / (layer.rows * layer.dim):.2f}"
            f" bits per element, {layer.payload_compression:.1f}x payload "
            f"compression, {layer.real_compression:.1f}x real"
        )
    if not same:
        raise SystemExit("The served top-k differs from the in-process one.")


if __name__ == "__main__":
    define_flags()
    import example_flags

    example_flags.run(main)
