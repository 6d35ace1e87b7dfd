"""Lookup and predict cost of FixedBitEmbedding, and conversion cost.

The setting: a 1,000,000 x 16 table, 4096 x 26 Zipf(1.1) ids, a
learned-like mix of bits (rising with frequency, the rarest groups pruned).
In one process it times, as medians over calls made in turns (float,
packed, float, ...) with the median per-turn ratio:

- the converted lookup vs a float `Embedding` lookup, without and with XLA;
- whole-model predict (26 fields, MLP 256-128), converted vs float;

and, with `--convert-rows`, converts tables of 1/10 and all of that many
rows in fresh processes, printing time and peak memory (max RSS growth)
relative to the float table. The project's targets: predict <= 1.2x
without XLA and <= 1.0x with XLA, lookup <= 3x without XLA, conversion
peak <= 1.5x the float table and time linear in rows.

With `--breakdown` it also times the non-XLA lookup stage by stage, and
under XLA the lookups and the MLP apart from the whole models.

    python benchmarks/serving_speed.py [--convert-rows 10000000] [--breakdown]
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
import workload  # noqa: E402

import keras_mpe  # noqa: E402


def parse_args():
    parser = workload.argument_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=50, help="calls of each, in turns"
    )
    parser.add_argument(
        "--convert-rows", type=int, default=0, help="rows to time converting"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the packed lookup's stages without XLA, and the "
        "lookup and the MLP apart under XLA",
    )
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
    layer.fix_bits(bits)
    return layer


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


def _report(label, baseline, ours, ids, repeats):
    """Times both in turns; prints medians and the per-turn ratio."""
    (base, mine), (_, ratio) = timing.time_turns(
        [lambda: baseline(ids), lambda: ours(ids)], repeats
    )
    print(
        f"{label} float {1e3 * base:7.2f} ms, packed {1e3 * mine:7.2f} ms: "
        f"{ratio:5.2f}x (median per-turn ratio)"
    )


def breakdown(fixed, float_table, ids, repeats):
    """Cumulative stages of the non-XLA lookup, and XLA parts apart.

    Each stage adds one step of `FixedBitEmbedding.call` (for the
    "segments" index) and stands in for the rest with a cheap tensor of
    the same shape, so the differences between lines are what each step
    costs in place.
    """
    dim = fixed.output_dim

    def stage(depth):
        """The lookup up to step `depth` (1: de-duplication, 2: class and
        slot, 3: split and re-join), each distinct id's row a stand-in."""

        def lookup(x):
            distinct, positions = tf.unique(tf.reshape(x, [-1]))
            values = distinct
            if depth >= 2:
                classes, slots = fixed.locate(distinct)
                values = slots + classes
            rows = tf.tile(values[:, None], [1, dim])
            if depth >= 3:
                count = len(fixed.class_rows)
                where = tf.dynamic_partition(
                    tf.range(tf.size(classes)), classes, count
                )
                parts = tf.dynamic_partition(slots, classes, count)
                rows = tf.dynamic_stitch(
                    where, [tf.tile(part[:, None], [1, dim]) for part in parts]
                )
            return tf.gather(tf.cast(rows, tf.float32), positions)

        return lookup

    stages = {
        "float lookup": float_table,
        "+ tf.unique and the gather back": stage(1),
        "+ class and slot of each id": stage(2),
        "+ split and re-join by class": stage(3),
        "+ gather and unpack (= packed lookup)": fixed,
    }
    functions = [tf.function(f) for f in stages.values()]
    medians, ratios = timing.time_turns(
        [lambda f=f: f(ids) for f in functions], repeats
    )
    for name, median, ratio in zip(stages, medians, ratios, strict=True):
        print(f"  xla=False {name:40s} {1e3 * median:6.2f} ms {ratio:5.2f}x")
    head = workload.mlp(tf.keras.layers.Identity(), (26, dim), "float32")
    parts = {
        "float model": workload.mlp(float_table),
        "packed model": workload.mlp(fixed),
        "float lookup": float_table,
        "packed lookup": fixed,
    }
    functions = [tf.function(f, jit_compile=True) for f in parts.values()]
    rows = float_table(ids)
    compiled_head = tf.function(head, jit_compile=True)
    medians, ratios = timing.time_turns(
        [lambda f=f: f(ids) for f in functions] + [lambda: compiled_head(rows)],
        repeats,
    )
    for name, median, ratio in zip(
        [*parts, "MLP alone"], medians, ratios, strict=True
    ):
        print(f"  xla=True  {name:40s} {1e3 * median:6.2f} ms {ratio:5.2f}x")


def main():
    args = parse_args()
    if args.convert_only:
        convert_only(args.convert_only, args.dim)
        return
    layer = searched_layer(args.rows, args.dim)
    fixed = keras_mpe.FixedBitEmbedding.from_searched(layer)
    report = keras_mpe.compression_report(workload.mlp(fixed))
    print(
        f"{workload.KERAS}: {args.rows} x {args.dim}, 4096 x 26 ids, "
        f"{layer.average_bits():.2f} bits, medians of {args.repeats}"
    )
    print(report)
    ids = tf.constant(
        workload.zipf_ids(args.rows, (4096, 26), np.random.default_rng(0))
    )
    float_table = tf.keras.layers.Embedding(args.rows, args.dim)
    for jit in (False, True):
        plain = tf.function(float_table, jit_compile=jit)
        packed = tf.function(fixed, jit_compile=jit)
        _report(f"lookup  xla={jit!s:5s}", plain, packed, ids, args.repeats)
    for jit in (False, True):
        float_model = tf.function(workload.mlp(float_table), jit_compile=jit)
        packed_model = tf.function(workload.mlp(fixed), jit_compile=jit)
        _report(
            f"predict xla={jit!s:5s}", float_model, packed_model, ids,
            args.repeats,
        )  # fmt: skip
    if args.breakdown:
        breakdown(fixed, float_table, ids, args.repeats)
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
