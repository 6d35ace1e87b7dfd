r"""Trains a CTR model with Mixed-Precision Embeddings and compares to fp32.

The whole path: fp32 baseline, then MPE search + retraining with
`MPECallback`, `keras_mpe.convert` to packed fixed-bit tables,
`keras_mpe.compression_report`, and `keras_mpe.export_saved_model` to a
SavedModel that TF Serving loads (see examples/serving_client.py).

The default data is the built-in synthetic Criteo-like generator (no
download). `--criteo PATH` reads a real Kaggle Criteo TSV instead, with the
MPE reference preprocessing. `--model dcn` puts a cross network (DCN-v2
cross layers) in front of the MLP.

    python examples/criteo_ctr.py
    python examples/criteo_ctr.py --model dcn --export-dir /tmp/ctr/1
    python examples/criteo_ctr.py --target-bits 0.32  # 100x, named
    python examples/criteo_ctr.py --max-metric-drop 0.005  # AUC, named
    python examples/criteo_ctr.py --batch-size 250 \
        --criteo ../shared/data/criteo/criteo_dac_head8000.txt

The MPE model uses the layer's and the callback's defaults and names the
accuracy the compression may cost (`--max-metric-drop`, 0.002 AUC by
default) instead of a bit penalty; `--bit-penalty` and `--temperature`
are expert knobs.
"""

import os
import time

from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import datasets  # noqa: E402

keras = tf.keras  # Keras 3, or tf_keras with TF_USE_LEGACY_KERAS=1
FLAGS = flags.FLAGS


def define_flags():
    """The command line. Defined when run as a script, not on import."""
    import example_flags  # examples/ is first on sys.path in a script

    flags.DEFINE_string(
        "criteo",
        None,
        "A Kaggle Criteo TSV file (label, I1-I13, C1-C26), read with the "
        "MPE reference preprocessing. Unset: the built-in synthetic "
        "Criteo-like data.",
    )
    flags.DEFINE_enum(
        "model",
        "dnn",
        ["dnn", "dcn"],
        "dnn: embeddings -> MLP 256-128; dcn: two DCN-v2 cross layers "
        "before the MLP.",
    )
    example_flags.define_export_dir("criteo_ctr")
    example_flags.define_synthetic_data(rows=400_000)
    example_flags.define_training(
        epochs=4,
        epochs_help="Training epochs of each model; for MPE the search "
        "epochs included.",
        search_epochs=2,
        batch_size=2048,
        dim=16,
        num_groups=64,
        learning_rate=1e-3,
    )
    example_flags.define_size("AUC", 0.002)
    # Listed by --help with this script's own flags.
    flags.adopt_module_key_flags(example_flags)


def load_data(args):
    """Returns (train, val, test) datasets and the vocabulary size."""
    if args.criteo:
        data = datasets.read_criteo(args.criteo, seed=args.seed)

        def batches(name):
            ids, labels = data[name]
            return tf.data.Dataset.from_tensor_slices(
                ({"categorical": ids}, labels)
            ).batch(args.batch_size)

        return (
            batches("train"),
            batches("val"),
            batches("test"),
            data["vocabulary_size"],
        )
    held_out = max(args.rows // 8, 1)

    def synthetic(rows, first_row):
        return datasets.criteo_like(
            rows,
            batch_size=args.batch_size,
            first_row=first_row,
            max_cardinality=args.max_cardinality,
            seed=args.seed,
        ).cache()

    vocabulary = sum(datasets.field_cardinalities(args.max_cardinality))
    return (
        synthetic(args.rows, 0),
        synthetic(held_out, args.rows),
        synthetic(held_out, args.rows + held_out),
        vocabulary,
    )


class Cross(keras.layers.Layer):
    """One DCN-v2 cross layer: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.dense = keras.layers.Dense(dim)
        self.dense.build((None, dim))

    def call(self, inputs):
        x0, x = inputs
        return x0 * self.dense(x) + x


def ctr_model(embedding, fields, dense_features, cross_layers=0):
    """Embeddings (+ log1p numeric features) -> [cross layers] -> MLP
    256-128 -> sigmoid."""
    categorical = keras.Input((fields,), dtype="int32", name="categorical")
    inputs = {"categorical": categorical}
    x = keras.layers.Flatten()(embedding(categorical))
    if dense_features:
        numeric = keras.Input((dense_features,), name="numeric")
        inputs["numeric"] = numeric
        x = keras.layers.Concatenate()(
            [x, keras.layers.Lambda(tf.math.log1p)(numeric)]
        )
    x0 = x
    for _ in range(cross_layers):
        x = Cross()([x0, x])
    for units in (256, 128):
        x = keras.layers.Dense(units, activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def compile_ctr(model, args):
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        "binary_crossentropy",
        metrics=[
            keras.metrics.AUC(name="auc"),
            keras.metrics.BinaryCrossentropy(name="logloss"),
        ],
    )


def train(embedding, data, args, callbacks=(), first_kept_epoch=0):
    """Fits, then keeps the weights of the best validation epoch from
    `first_kept_epoch` on (MPE: the first retraining epoch)."""
    train_data, val_data, test_data, _ = data
    keras.utils.set_random_seed(args.seed)
    features = next(iter(train_data))[0]
    dense = features["numeric"].shape[-1] if "numeric" in features else 0
    model = ctr_model(
        embedding(),
        features["categorical"].shape[-1],
        dense,
        cross_layers=2 if args.model == "dcn" else 0,
    )
    compile_ctr(model, args)
    best_epoch = keras.callbacks.EarlyStopping(
        monitor="val_auc",
        mode="max",
        patience=args.epochs,  # never stops early, only restores the best
        start_from_epoch=first_kept_epoch,
        restore_best_weights=True,
        verbose=1,
    )
    start = time.time()
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=args.epochs,
        callbacks=[*callbacks, best_epoch],
        verbose=2,
    )
    seconds = time.time() - start
    scores = model.evaluate(test_data, return_dict=True, verbose=0)
    return model, scores, seconds


def main(args):
    data = load_data(args)
    vocabulary = data[3]
    print(f"vocabulary: {vocabulary} ids, embedding dim {args.dim}")

    print("\n== fp32 embedding ==")
    _, fp32, fp32_seconds = train(
        lambda: keras.layers.Embedding(vocabulary, args.dim), data, args
    )

    print("\n== Mixed-Precision Embedding ==")
    layers = []

    def mpe():
        layers.append(
            keras_mpe.MixedPrecisionEmbedding(
                vocabulary,
                args.dim,
                num_groups=args.num_groups,
                **example_flags.search_knobs(args),
            )
        )
        return layers[-1]

    callback = keras_mpe.MPECallback(
        frequency_data=data[0],
        search_epochs=args.search_epochs,
        monitor="val_auc",
        **example_flags.size_options(args, data[1]),
    )
    model, mpe_scores, mpe_seconds = train(
        mpe, data, args, [callback], first_kept_epoch=args.search_epochs
    )
    layer = layers[-1]
    print(
        f"\nsearch outcome: {layer.average_bits():.3f} bits per element; "
        "bits per frequency group (rarest first):"
    )
    print(layer.bits_per_group().tolist())

    print("\n== convert, report, export ==")
    serving_model = keras_mpe.convert(model, layout=args.layout)
    compile_ctr(serving_model, args)
    print(
        keras_mpe.compression_report(
            serving_model,
            original_model=model,
            data=data[2],
            metric=keras.metrics.AUC(name="auc"),
        )
    )
    path = keras_mpe.export_saved_model(
        serving_model, args.export_dir, overwrite=True
    )
    served = serving_model.evaluate(data[2], return_dict=True, verbose=0)
    picture = os.path.join(os.path.dirname(path), "bits_per_group.png")
    try:
        keras_mpe.compression_report(serving_model).plot(picture)
        print(f"bits per group against lookups drawn in {picture}")
    except ImportError as error:
        print(f"no picture of the bits per group: {error}")
    print(f"SavedModel written to {path}; serve it with")
    print(
        "  tensorflow_model_server --rest_api_port=8501 --model_name=criteo_ctr"
        f" --model_base_path={os.path.dirname(path)}"
    )
    print("\n== test set (each model at its best validation epoch) ==")
    print(
        f"fp32           : AUC {fp32['auc']:.4f}  LogLoss "
        f"{fp32['logloss']:.4f}  train {fp32_seconds:.0f}s"
    )
    print(
        f"MPE (retrained): AUC {mpe_scores['auc']:.4f}  LogLoss "
        f"{mpe_scores['logloss']:.4f}  train {mpe_seconds:.0f}s"
    )
    print(
        f"MPE (converted): AUC {served['auc']:.4f}  LogLoss "
        f"{served['logloss']:.4f}"
    )


if __name__ == "__main__":
    define_flags()
    import example_flags

    example_flags.run(main)
