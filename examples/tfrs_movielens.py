"""A TensorFlow Recommenders ranking model on MovieLens 100K with MPE.

User and movie ids go through MixedPrecisionEmbedding tables inside a
`tfrs.models.Model`; `model.fit` with `MPECallback` searches and retrains,
then the model is converted to packed tables and exported for TF Serving.
Each model keeps its best validation epoch (MPE: the best retraining
epoch). Prints test RMSE of float embeddings vs MPE, and the compression
report.

TFRS needs Keras 2 (tf_keras): this script sets TF_USE_LEGACY_KERAS=1.

    python examples/tfrs_movielens.py --data ../shared/data/movielens/ml-100k

`--data` is the ml-100k folder holding u.data (from
https://grouplens.org/datasets/movielens/100k/).
"""

import os
import pathlib

from absl import flags

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import datasets  # noqa: E402

keras = tf.keras  # tf_keras: TFRS refuses Keras 3 when imported
DEFAULT_DATA = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared/data/movielens/ml-100k"
)
FEATURES = ("user_id", "movie_id")
FLAGS = flags.FLAGS


def define_flags():
    """The command line. Defined when run as a script, not on import."""
    import example_flags  # examples/ is first on sys.path in a script

    flags.DEFINE_string(
        "data",
        str(DEFAULT_DATA),
        "The MovieLens 100K folder (ml-100k) holding u.data.",
    )
    example_flags.define_export_dir("movielens_ranking")
    example_flags.define_training(
        epochs=3,
        epochs_help="Training epochs of the fp32 model, and retraining "
        "epochs of MPE after the search (MPE trains search-epochs + epochs "
        "in all).",
        search_epochs=3,
        batch_size=1024,
        batch_help="Ratings per batch.",
        dim=32,
        num_groups=32,
        learning_rate=3e-3,
    )
    example_flags.define_size("RMSE", 0.005)
    # Listed by --help with this script's own flags.
    flags.adopt_module_key_flags(example_flags)


class RankingModel(tfrs.models.Model):
    """Rating = MLP(concat(user embedding, movie embedding)).

    Args:
        make_embedding: Callable taking a vocabulary size and returning
            the embedding layer of that feature.
        vocabulary_sizes: Dict of `{"user_id": users, "movie_id": movies}`.
        hidden_units: Sequence of integers. The MLP's ReLU layers before
            the one linear output.
    """

    def __init__(
        self, make_embedding, vocabulary_sizes, hidden_units=(256, 64)
    ):
        super().__init__()
        self.user_embedding = make_embedding(vocabulary_sizes["user_id"])
        self.movie_embedding = make_embedding(vocabulary_sizes["movie_id"])
        hidden = [
            keras.layers.Dense(u, activation="relu") for u in hidden_units
        ]
        self.ratings = keras.Sequential([*hidden, keras.layers.Dense(1)])
        self.task = tfrs.tasks.Ranking(
            loss=keras.losses.MeanSquaredError(),
            metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
        )

    def call(self, features):
        return self.ratings(
            tf.concat(
                [self.user_embedding(features["user_id"]),
                 self.movie_embedding(features["movie_id"])],
                axis=1,
            )
        )  # fmt: skip

    def compute_loss(self, features, training=False):
        return self.task(labels=features["rating"], predictions=self(features))


def load(args):
    if not (pathlib.Path(args.data) / "u.data").exists():
        raise SystemExit(
            f"--data {args.data}: no u.data there. Download ml-100k from "
            "https://grouplens.org/datasets/movielens/100k/ and pass its "
            "folder."
        )
    raw = datasets.read_movielens(args.data, seed=args.seed)

    def batches(part):
        features, ratings = raw[part]
        columns = {**features, "rating": ratings[:, 0]}
        return (
            tf.data.Dataset.from_tensor_slices(columns)
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
    test RMSE."""
    keras.utils.set_random_seed(args.seed)
    model.compile(keras.optimizers.Adam(args.learning_rate))
    best_epoch = keras.callbacks.EarlyStopping(
        monitor="val_rmse",
        mode="min",
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
    return model.evaluate(data["test"], return_dict=True, verbose=0)["rmse"]


def main(args):
    data, sizes = load(args)
    print(f"vocabulary sizes: {sizes}, embedding dim {args.dim}")

    print("\n== fp32 embeddings ==")
    keras.utils.set_random_seed(args.seed)
    fp32 = RankingModel(lambda n: keras.layers.Embedding(n, args.dim), sizes)
    fp32_rmse = train(fp32, data, args, args.epochs)

    print("\n== Mixed-Precision Embeddings ==")
    keras.utils.set_random_seed(args.seed)
    model = RankingModel(
        lambda n: keras_mpe.MixedPrecisionEmbedding(
            n,
            args.dim,
            num_groups=args.num_groups,
            **example_flags.search_knobs(args),
        ),
        sizes,
    )
    callback = keras_mpe.MPECallback(
        frequency_data=data["train"],
        search_epochs=args.search_epochs,
        monitor="val_rmse",
        mode="min",
        **example_flags.size_options(args, data["val"]),
    )
    mpe_rmse = train(
        model,
        data,
        args,
        args.search_epochs + args.epochs,
        [callback],
        first_kept_epoch=args.search_epochs,
    )

    print("\n== convert, report, export ==")
    # TFRS models are converted in place.
    serving_model = keras_mpe.convert(model, layout=args.layout)
    print(keras_mpe.compression_report(serving_model))
    signature = {
        name: tf.TensorSpec([None], tf.int32, name=name) for name in FEATURES
    }
    path = keras_mpe.export_saved_model(
        serving_model, args.export_dir, signature=signature, overwrite=True
    )
    served_rmse = serving_model.evaluate(
        data["test"], return_dict=True, verbose=0
    )["rmse"]
    print(f"SavedModel written to {path}")

    print("\n== test RMSE (each model at its best validation epoch) ==")
    print(f"fp32           : {fp32_rmse:.4f}")
    print(
        f"MPE (retrained): {mpe_rmse:.4f} ({mpe_rmse / fp32_rmse - 1:+.2%}) "
        f"at {callback.average_bits():.2f} bits per element, "
        f"{32 / callback.average_bits():.1f}x payload compression"
    )
    print(f"MPE (converted): {served_rmse:.4f}")


if __name__ == "__main__":
    define_flags()
    import example_flags

    example_flags.run(main)
