"""Lookup and predict cost of FixedBitEmbedding's two layouts, and conversion.

The setting: a 1,000,000 x 16 table, 4096 x 26 Zipf(1.1) ids, and the
bits the synthetic quality benchmark learned (MPE at bit penalty 1e-2,
seed 0, `results/synthetic/results.json`: per frequency group, most
groups pruned, 2-6 bits for the most frequent), given to groups formed
from the counts of the benchmark's own ids (numbered by count, as an
adapted vocabulary is, so the "packed" layout gets its "segments"
index). In one process it times, as medians over calls made in turns
(float, packed, bytes, float, ...) with the median per-turn ratio to the
float call:

- the converted lookup vs a float `Embedding` lookup, without and with XLA;
- whole-model predict (26 fields, MLP 256-128), converted vs float;

for both code layouts ("packed", the smallest; "bytes", the fastest), and
prints each layout's real bytes. With `--convert-rows` it converts
tables of 1/10 and all of that many rows in fresh processes, printing
time and peak memory (max RSS growth) relative to the float table. The
project's targets: "bytes" predict <= 1.10x without XLA and <= 1.05x with
XLA, lookup <= 1.5x without XLA; "packed" predict <= 1.10x with XLA;
conversion peak <= 1.5x the float table and time linear in rows.

With `--breakdown` it also times each layout's lookup stage by stage
without XLA, and under XLA the lookups and the MLP apart from the whole
models. The last line is the figures as one JSON object.

    python benchmarks/serving_speed.py [--convert-rows 10000000] [--breakdown]
    TF_USE_LEGACY_KERAS=1 python benchmarks/serving_speed.py
"""

import argparse
import json
import os
import pathlib
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
from keras_mpe import ids as id_checks  # noqa: E402

LAYOUTS = ("packed", "bytes")
LEARNED = pathlib.Path(__file__).parent / "results/synthetic/results.json"


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
        help="also time each layout's lookup stages without XLA, and the "
        "lookups and the MLP apart under XLA",
    )
    parser.add_argument(
        "--convert-only", type=int, default=0, help=argparse.SUPPRESS
    )
    return parser.parse_args()


def learned_bits():
    """Bits per frequency group (rarest first) that the synthetic quality
    benchmark's MPE run at penalty 1e-2, seed 0, chose."""
    runs = json.loads(LEARNED.read_text())["runs"]
    (run,) = [r for r in runs if r["method"] == "mpe@0.01" and r["seed"] == 0]
    return np.array(run["group_bits"])


def searched_layer(rows, dim, ids):
    """A FIXED-phase layer: groups from the counts of `ids`, the learned
    bits per group."""
    bits = learned_bits()
    layer = keras_mpe.MixedPrecisionEmbedding(rows, dim, num_groups=bits.size)
    layer.set_frequencies(np.bincount(np.ravel(ids), minlength=rows))
    layer.fix_bits(bits)
    return layer


def benchmark_ids(rows):
    """4096 x 26 Zipf(1.1) ids, renumbered by their count (most frequent
    first, ties in id order), as an adapted vocabulary numbers them."""
    ids = workload.zipf_ids(rows, (4096, 26), np.random.default_rng(0))
    order = np.argsort(-np.bincount(ids.ravel(), minlength=rows), kind="stable")
    rank = np.empty(rows, np.int32)
    rank[order] = np.arange(rows, dtype=np.int32)
    return rank[ids]


def _rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def convert_only(rows, dim):
    """Runs in a fresh process: prints seconds and peak RSS growth."""
    layer = searched_layer(rows, dim, benchmark_ids(rows))
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


def _report(label, functions, ids, repeats):
    """Times float and each layout in turns; prints medians and per-turn
    ratios, returns the ratios by layout."""
    medians, ratios = timing.time_turns(
        [lambda f=f: f(ids) for f in functions], repeats
    )
    parts = [f"float {1e3 * medians[0]:6.2f} ms"] + [
        f"{name} {1e3 * median:6.2f} ms {ratio:5.2f}x"
        for name, median, ratio in zip(
            LAYOUTS, medians[1:], ratios[1:], strict=True
        )
    ]
    print(f"{label} " + ", ".join(parts) + " (median per-turn ratio)")
    return dict(zip(LAYOUTS, ratios[1:], strict=True))


def _print_stages(title, stages, ids, repeats):
    """Times cumulative stages (each a function of the ids) in turns."""
    functions = [tf.function(f) for f in stages.values()]
    medians, ratios = timing.time_turns(
        [lambda f=f: f(ids) for f in functions], repeats
    )
    print(f"  {title}")
    for name, median, ratio in zip(stages, medians, ratios, strict=True):
        print(f"    xla=False {name:42s} {1e3 * median:6.2f} ms {ratio:5.2f}x")


def _flat_checked(layer, x):
    """The ids flattened and checked, as every lookup starts."""
    flat = tf.reshape(x, [-1])
    return id_checks.checked_ids(flat, layer.input_dim, layer)


def packed_stages(fixed, float_table):
    """Cumulative stages of the non-XLA "packed" lookup ("segments"
    index). Each adds one step of the lookup and stands in for the rest
    with a cheap tensor of the same shape, so the differences between
    lines are what each step costs in place."""
    dim = fixed.output_dim

    def stage(depth):
        def lookup(x):
            distinct, positions = tf.unique(_flat_checked(fixed, x))
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

    return {
        "float lookup": float_table,
        "+ id check, tf.unique and the gather back": stage(1),
        "+ class and slot of each id": stage(2),
        "+ split and re-join by class": stage(3),
        "+ gather and unpack (= packed lookup)": fixed,
    }


def bytes_stages(fixed, float_table):
    """Cumulative stages of the non-XLA "bytes" lookup ("direct" index),
    stand-ins as in `packed_stages`."""
    dim = fixed.output_dim
    (codes,) = fixed._codes

    def checked(x):
        return tf.tile(
            tf.cast(_flat_checked(fixed, x), tf.float32)[:, None], [1, dim]
        )

    def located(x):
        classes, slots = fixed.locate(_flat_checked(fixed, x))
        return tf.tile(tf.cast(classes + slots, tf.float32)[:, None], [1, dim])

    def gathered(x):
        _, slots = fixed.locate(_flat_checked(fixed, x))
        return tf.gather(codes, slots)  # rows of the one matrix

    def cast(x):
        return tf.cast(tf.bitcast(gathered(x), tf.int8), tf.float32)

    return {
        "float lookup": float_table,
        "+ id check": checked,
        "+ class and slot of each id (one gather)": located,
        "+ gather of the codes (uint8)": gathered,
        "+ cast to float": cast,
        "+ class step and offset (= bytes lookup)": fixed,
    }


def breakdown(fixed, float_table, ids, repeats):
    """Each layout's lookup stage by stage; under XLA, parts apart."""
    _print_stages(
        "packed", packed_stages(fixed["packed"], float_table), ids, repeats
    )
    _print_stages(
        "bytes", bytes_stages(fixed["bytes"], float_table), ids, repeats
    )
    dim = float_table.output_dim
    head = workload.mlp(tf.keras.layers.Identity(), (26, dim), "float32")
    parts = {"float model": workload.mlp(float_table)}
    parts.update({f"{n} model": workload.mlp(f) for n, f in fixed.items()})
    parts["float lookup"] = float_table
    parts.update({f"{n} lookup": f for n, f in fixed.items()})
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
        print(f"    xla=True  {name:42s} {1e3 * median:6.2f} ms {ratio:5.2f}x")


def time_conversion(rows, dim):
    for count in (rows // 10, rows):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--convert-only",
                str(count),
                "--dim",
                str(dim),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        seconds, peak = float(out[-2]), float(out[-1])
        table = 4 * count * dim
        print(
            f"convert {count:>10d} rows: {seconds:6.1f} s, "
            f"{seconds / count * 1e6:5.2f} s per 1e6 rows, peak memory "
            f"growth {peak / table:4.2f}x the float table"
        )


def main():
    args = parse_args()
    if args.convert_only:
        convert_only(args.convert_only, args.dim)
        return
    ids = tf.constant(benchmark_ids(args.rows))
    layer = searched_layer(args.rows, args.dim, ids.numpy())
    fixed = {
        layout: keras_mpe.FixedBitEmbedding.from_searched(layer, layout=layout)
        for layout in LAYOUTS
    }
    print(
        f"{workload.KERAS}: {args.rows} x {args.dim}, 4096 x 26 ids, "
        f"{layer.average_bits():.2f} bits, medians of {args.repeats}"
    )
    real_bytes = {}
    for layout, layer_ in fixed.items():
        report = keras_mpe.compression_report(workload.mlp(layer_))
        (table,) = report.layers
        real_bytes[layout] = table.real_bytes
        print(f"{layout} (index {layer_.index}): {report}")
    float_table = tf.keras.layers.Embedding(args.rows, args.dim)
    figures = {"keras": workload.KERAS, "average_bits": layer.average_bits()}
    for what, wrap in (("lookup", lambda f: f), ("predict", workload.mlp)):
        for jit in (False, True):
            functions = [
                tf.function(wrap(f), jit_compile=jit)
                for f in (float_table, *fixed.values())
            ]
            ratios = _report(
                f"{what:7s} xla={jit!s:5s}", functions, ids, args.repeats
            )
            name = f"{what}_ratio" + ("_xla" if jit else "")
            figures[name] = ratios["bytes"]
            figures["packed_" + name] = ratios["packed"]
    figures["real_bytes_vs_packed"] = real_bytes["bytes"] / real_bytes["packed"]
    if args.breakdown:
        breakdown(fixed, float_table, ids, args.repeats)
    if args.convert_rows:
        time_conversion(args.convert_rows, args.dim)
    print(
        json.dumps(
            {
                k: round(v, 3) if isinstance(v, float) else v
                for k, v in figures.items()
            }
        )
    )


if __name__ == "__main__":
    main()
