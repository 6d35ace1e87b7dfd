"""Epoch time of MPE search and retraining vs fp32, reference configuration.

The configuration in which the authors' PyTorch code was timed on this CPU:
the Criteo sample in ../shared/data (reference preprocessing, 80/10/10
split), a DNN 1024-512-256 with BatchNorm + ReLU, dimension 16, batch 250,
Adam 1e-3. In one process, on the same data, it times training epochs of
the same model with a plain `Embedding` (fp32), with MixedPrecisionEmbedding
in the SEARCH phase and in the FIXED (retraining) phase, and prints median
epoch times and ratios. Reference measurements (PyTorch, this CPU):
search / fp32 = 1.22-1.24x, retrain / fp32 = 1.09-1.19x.

    python benchmarks/criteo_epoch_time.py [--jit]
    TF_USE_LEGACY_KERAS=1 python benchmarks/criteo_epoch_time.py [--jit]
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import timing  # noqa: E402
import workload  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import datasets  # noqa: E402
from keras_mpe import frequency  # noqa: E402

keras = tf.keras
DEFAULT_PATH = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "criteo"
    / "criteo_dac_head8000.txt"
)


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--criteo", default=str(DEFAULT_PATH), help="a Criteo TSV sample"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="timed epochs per variant (median reported)",
    )
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    return parser.parse_args()


def dnn(embedding, fields, jit):
    inputs = keras.Input((fields,), dtype="int32")
    x = keras.layers.Flatten()(embedding(inputs))
    for units in (1024, 512, 256):
        x = keras.layers.Dense(units)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, "sigmoid")(x))
    model.compile(
        keras.optimizers.Adam(1e-3), "binary_crossentropy", jit_compile=jit
    )
    return model


def main():
    args = parse_args()
    if not pathlib.Path(args.criteo).exists():
        sys.exit(f"{args.criteo} is absent: pass --criteo PATH")
    data = datasets.read_criteo(args.criteo)
    ids, labels = data["train"]
    train = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(250)
    vocabulary, fields = data["vocabulary_size"], ids.shape[1]
    mode = workload.KERAS
    print(
        f"{mode}, jit_compile={args.jit}: {len(ids)} rows, {fields} fields,"
        f" vocabulary {vocabulary}, batch 250, median of {args.epochs}"
    )

    baseline = dnn(keras.layers.Embedding(vocabulary, 16), fields, args.jit)
    layer = keras_mpe.MixedPrecisionEmbedding(vocabulary, 16)
    model = dnn(layer, fields, args.jit)
    (counts,) = frequency.count_ids(model, [layer], train)
    layer.set_frequencies(counts)
    layer.set_phase(keras_mpe.Phase.SEARCH)
    # A learned-like mix for retraining: bits rise with frequency.
    ranks = np.arange(layer.num_groups) / (layer.num_groups - 1)
    chosen = np.round(ranks * max(layer.bit_candidates)).astype(int)
    variants = [
        ("fp32", baseline, lambda: None),
        ("search", model, lambda: layer.set_phase(keras_mpe.Phase.SEARCH)),
        ("retrain", model, lambda: layer.fix_bits(chosen)),
    ]
    steps = len(train)
    seconds = timing.time_steps(variants, train, steps, args.epochs)
    for name, value in seconds.items():
        print(
            f"{name:8s} epoch {value * steps:7.3f} s "
            f"{value / seconds['fp32']:6.2f}x"
        )


if __name__ == "__main__":
    main()
