"""Lookup and predict cost of FixedBitEmbedding, and conversion cost.

Serving issue setting: a 1,000,000 x 16 table, 4096 x 26 Zipf(1.1) ids,
a learned-like mix of bits (rising with frequency, the rarest groups
pruned). In one process it times, as medians:

- the converted lookup vs a float `Embedding` lookup, without and with XLA;
- whole-model predict (26 fields, MLP 256-128), converted vs float;

and, with `--convert-rows`, converts tables of 1/10 and all of that many
rows in fresh processes, printing time and peak memory (max RSS growth)
relative to the float table. Targets: predict <= 1.2x without XLA and
<= 1.0x with XLA, lookup <= 3x without XLA, conversion peak <= 1.5x the
float table and time linear in rows.

    python benchmarks/serving_speed.py [--convert-rows 10000000]
    TF_USE_LEGACY_KERAS=1 python benchmarks/serving_speed.py
"""

import argparse
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import timing  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import _compat  # noqa: E402

keras = _compat.keras


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--convert-rows", type=int, default=0)
    parser.add_argument(
        "--convert-only", type=int, default=0, help=argparse.SUPPRESS
    )
    return parser.parse_args()


def searched_layer(rows, dim):
    """A FIXED-phase layer with bits rising with frequency (ids ordered)."""
    layer = keras_mpe.MixedPrecisionEmbedding(rows, dim)
    layer.set_frequencies(np.arange(rows, 0, -1))
    ranks = np.arange(layer.num_groups) / (layer.num_groups - 1)
    bits = np.round(ranks**2 * 6).astype(int)  # most groups at low bits
    layer.set_bits(bits)
    return layer


def zipf_ids(rows, shape):
    rng = np.random.default_rng(0)
    top = (rows + 1.0) ** -0.1
    ranks = (1.0 + rng.random(shape) * (top - 1.0)) ** (1.0 / -0.1)
    return tf.constant(
        np.minimum(ranks.astype(np.int64) - 1, rows - 1), tf.int32
    )


def mlp(embedding, fields):
    inputs = keras.Input((fields,), dtype="int32")
    x = keras.layers.Flatten()(embedding(inputs))
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1, "sigmoid")(x))


def _rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def convert_only(rows, dim):
    """Runs in a fresh process: prints seconds and peak RSS growth."""
    layer = searched_layer(rows, dim)
    before = peak = _rss_bytes()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, _rss_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    keras_mpe.FixedBitEmbedding.from_searched(layer)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    print(seconds, max(peak, _rss_bytes()) - before)


def main():
    args = parse_args()
    if args.convert_only:
        convert_only(args.convert_only, args.dim)
        return
    mode = "Keras 3" if _compat.IS_KERAS_3 else "tf_keras"
    layer = searched_layer(args.rows, args.dim)
    fixed = keras_mpe.FixedBitEmbedding.from_searched(layer)
    report = keras_mpe.compression_report(mlp(fixed, 26))
    print(
        f"{mode}: {args.rows} x {args.dim}, 4096 x 26 ids, "
        f"{layer.average_bits():.2f} bits, medians of {args.repeats}"
    )
    print(report)
    ids = zipf_ids(args.rows, (4096, 26))
    float_table = keras.layers.Embedding(args.rows, args.dim)
    for jit in (False, True):
        plain = tf.function(float_table, jit_compile=jit)
        packed = tf.function(fixed, jit_compile=jit)
        base = timing.time_call(lambda f=plain: f(ids), args.repeats)
        ours = timing.time_call(lambda f=packed: f(ids), args.repeats)
        print(
            f"lookup  xla={jit!s:5s} float {1e3 * base:7.2f} ms, "
            f"packed {1e3 * ours:7.2f} ms: {ours / base:5.2f}x"
        )
    for jit in (False, True):
        float_model = tf.function(mlp(float_table, 26), jit_compile=jit)
        packed_model = tf.function(mlp(fixed, 26), jit_compile=jit)
        base = timing.time_call(lambda f=float_model: f(ids), args.repeats)
        ours = timing.time_call(lambda f=packed_model: f(ids), args.repeats)
        print(
            f"predict xla={jit!s:5s} float {1e3 * base:7.2f} ms, "
            f"packed {1e3 * ours:7.2f} ms: {ours / base:5.2f}x"
        )
    if args.convert_rows:
        for rows in (args.convert_rows // 10, args.convert_rows):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--convert-only",
                    str(rows),
                    "--dim",
                    str(args.dim),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            seconds, peak = float(out[-2]), float(out[-1])
            table = 4 * rows * args.dim
            print(
                f"convert {rows:>10d} rows: {seconds:6.1f} s, "
                f"{seconds / rows * 1e6:5.2f} s per 1e6 rows, peak memory "
                f"growth {peak / table:4.2f}x the float table"
            )


if __name__ == "__main__":
    main()
