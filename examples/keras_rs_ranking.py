r"""A keras-rs ranking (CTR) model with Mixed-Precision Embeddings.

The 26 categorical fields of the built-in synthetic Criteo-like data share
one embedding table (their ids are global: field offset + rank). The model
is DLRM (a bottom MLP on the numeric features, `keras_rs.layers.
DotInteraction` between every pair of field vectors, a top MLP) or DCN-v2
(`keras_rs.layers.FeatureCross` layers before the MLP). It trains once with
a float `keras.layers.Embedding` and once with a
`keras_mpe.MixedPrecisionEmbedding` (search + retraining by
`MPECallback`), converts the MPE model to packed tables, prints the
compression report, exports a SavedModel for TF Serving, reloads it and
checks that it serves the converted model's predictions.

keras-rs layers are Keras 3 layers: run without TF_USE_LEGACY_KERAS=1, after
`pip install -e ".[keras-rs]"`.

    python examples/keras_rs_ranking.py
    python examples/keras_rs_ranking.py --model dcn --target-bits 0.32
"""

import os
import sys
import time

from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_rs  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import datasets  # noqa: E402

keras = tf.keras  # Keras 3 (tf_keras with TF_USE_LEGACY_KERAS=1: refused)
FLAGS = flags.FLAGS


def define_flags():
    """The command line. Defined when run as a script, not on import."""
    import example_flags  # examples/ is first on sys.path in a script

    flags.DEFINE_enum(
        "model",
        "dlrm",
        ["dlrm", "dcn"],
        "dlrm: bottom MLP + DotInteraction + top MLP; dcn: two FeatureCross "
        "layers before the MLP.",
    )
    example_flags.define_export_dir("keras_rs_ranking")
    example_flags.define_synthetic_data(rows=200_000)
    example_flags.define_training(
        epochs=3,
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
    """Returns (train, val, test) datasets of the synthetic data."""
    held_out = max(args.rows // 8, 1)

    def synthetic(rows, first_row):
        return datasets.criteo_like(
            rows,
            batch_size=args.batch_size,
            first_row=first_row,
            max_cardinality=args.max_cardinality,
            seed=args.seed,
        ).cache()

    return (
        synthetic(args.rows, 0),
        synthetic(held_out, args.rows),
        synthetic(held_out, args.rows + held_out),
    )


def mlp(x, units):
    """Dense ReLU layers of the given widths."""
    for width in units:
        x = keras.layers.Dense(width, activation="relu")(x)
    return x


def ranking_model(embedding, model_type, dim):
    """DLRM or DCN-v2 on one embedding table shared by the 26 fields."""
    fields = len(datasets.CRITEO_CARDINALITIES)
    categorical = keras.Input((fields,), dtype="int32", name="categorical")
    numeric = keras.Input((datasets.NUM_DENSE,), name="numeric")
    vectors = embedding(categorical)  # (batch, fields, dim)
    dense = keras.ops.log1p(numeric)
    if model_type == "dlrm":
        bottom = mlp(dense, (64, dim))
        interactions = keras_rs.layers.DotInteraction()(
            [bottom, *keras.ops.unstack(vectors, num=fields, axis=1)]
        )
        x = keras.layers.Concatenate()([bottom, interactions])
    else:
        x0 = keras.layers.Concatenate()(
            [keras.layers.Flatten()(vectors), dense]
        )
        x = x0
        for _ in range(2):
            x = keras_rs.layers.FeatureCross()(x0, x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(mlp(x, (256, 128)))
    inputs = {"categorical": categorical, "numeric": numeric}
    return keras.Model(inputs, outputs)


def compile_ctr(model, args):
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        "binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )


def train(embedding, data, args, callbacks=(), first_kept_epoch=0):
    """Fits, then keeps the weights of the best validation epoch from
    `first_kept_epoch` on (MPE: the first retraining epoch)."""
    train_data, val_data, test_data = data
    keras.utils.set_random_seed(args.seed)
    model = ranking_model(embedding, args.model, args.dim)
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
    if int(getattr(tf.keras, "__version__", "2").split(".")[0]) < 3:
        sys.exit(
            "keras-rs layers need Keras 3, but tf.keras is tf_keras "
            "(Keras 2): unset TF_USE_LEGACY_KERAS and run again."
        )
    data = load_data(args)
    vocabulary = sum(datasets.field_cardinalities(args.max_cardinality))
    print(f"{args.model}: {vocabulary} ids in one table, dim {args.dim}")

    print("\n== fp32 embedding ==")
    _, fp32, fp32_seconds = train(
        keras.layers.Embedding(vocabulary, args.dim), data, args
    )

    print("\n== Mixed-Precision Embedding ==")
    layer = keras_mpe.MixedPrecisionEmbedding(
        vocabulary,
        args.dim,
        num_groups=args.num_groups,
        **example_flags.search_knobs(args),
    )
    callback = keras_mpe.MPECallback(
        frequency_data=data[0],
        search_epochs=args.search_epochs,
        monitor="val_auc",
        **example_flags.size_options(args, data[1]),
    )
    model, mpe, mpe_seconds = train(
        layer, data, args, [callback], first_kept_epoch=args.search_epochs
    )
    print(f"\nsearch outcome: {layer.average_bits():.3f} bits per element")

    print("\n== convert, report, export, reload ==")
    serving_model = keras_mpe.convert(model, layout=args.layout)
    compile_ctr(serving_model, args)
    report = keras_mpe.compression_report(
        serving_model,
        original_model=model,
        data=data[2],
        metric=keras.metrics.AUC(name="auc"),
    )
    print(report)
    path = keras_mpe.export_saved_model(
        serving_model, args.export_dir, overwrite=True
    )
    serve = tf.saved_model.load(path).signatures["serving_default"]
    rows = 0
    for features, _ in data[2]:
        np.testing.assert_allclose(
            serve(**features)["outputs"],
            serving_model(features, training=False),
            rtol=1e-6,
            atol=1e-6,
        )
        rows += len(features["numeric"])
    print(f"SavedModel written to {path}")
    print(f"served predictions match the converted model on {rows} test rows")
    converted = serving_model.evaluate(data[2], return_dict=True, verbose=0)

    print("\n== test set (each model at its best validation epoch) ==")
    print(f"fp32           : AUC {fp32['auc']:.4f}  train {fp32_seconds:.0f}s")
    print(f"MPE (retrained): AUC {mpe['auc']:.4f}  train {mpe_seconds:.0f}s")
    print(f"MPE (converted): AUC {converted['auc']:.4f}")
    table = report.layers[0]
    print(
        f"compression    : {table.payload_compression:.1f}x payload, "
        f"{table.real_compression:.1f}x real bytes"
    )


if __name__ == "__main__":
    define_flags()
    import example_flags

    example_flags.run(main)
