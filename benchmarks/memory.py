"""Training footprint: peak memory of a whole fit, MPE vs a plain Embedding.

The setting: a 10,000,000 x 16 table shared by 26 Zipf(1.1) fields, MLP
256-128, batch 4096, Adam, 8 batches per epoch. Each variant runs in a
fresh process and reports its peak resident memory (VmHWM):

- "embedding": `keras.layers.Embedding`, 3 epochs;
- "mpe": `MixedPrecisionEmbedding` with `MPECallback` (frequency
  counting, 1 float warm-up epoch, 1 search epoch, selection and rewind,
  1 retraining epoch).

The project's target: MPE's peak <= 1.10x the plain Embedding's. The last
line is the figures as one JSON object.

    python benchmarks/memory.py [--rows 10000000]
    TF_USE_LEGACY_KERAS=1 python benchmarks/memory.py
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import workload  # noqa: E402

import keras_mpe  # noqa: E402

VARIANTS = ("embedding", "mpe")


def parse_args():
    parser = workload.argument_parser(__doc__.splitlines()[0])
    parser.set_defaults(rows=10_000_000)
    parser.add_argument("--batches", type=int, default=8, help="per epoch")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser.parse_args()


def peak_bytes() -> int:
    """This process's peak resident memory (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_variant(args):
    """In a fresh process: one whole fit; prints the peak bytes."""
    keras = tf.keras
    rng = np.random.default_rng(0)
    ids = workload.zipf_ids(args.rows, (args.batches * 4096, 26), rng)
    labels = rng.integers(0, 2, (ids.shape[0], 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(4096)
    callbacks = []
    if args.variant == "mpe":
        embedding = keras_mpe.MixedPrecisionEmbedding(args.rows, args.dim)
        callbacks.append(
            keras_mpe.MPECallback(
                data, search_epochs=2, warmup_epochs=1, verbose=0
            )
        )
    else:
        embedding = keras.layers.Embedding(args.rows, args.dim)
    model = workload.mlp(embedding)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    model.fit(data, epochs=3, verbose=0, callbacks=callbacks)
    print(peak_bytes())


def main():
    args = parse_args()
    if args.variant:
        run_variant(args)
        return
    peaks = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--rows",
                str(args.rows),
                "--dim",
                str(args.dim),
                "--batches",
                str(args.batches),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        peaks[variant] = int(out[-1])
        gib = peaks[variant] / 2**30
        print(f"{variant:10s} peak resident memory {gib:6.2f} GiB")
    keras_mode = workload.KERAS
    table = 4 * args.rows * args.dim
    ratio = peaks["mpe"] / peaks["embedding"]
    print(
        f"{keras_mode}: {args.rows} x {args.dim}, float table "
        f"{table / 2**30:.2f} GiB; MPE / Embedding peak: {ratio:.3f}x, "
        f"+{(peaks['mpe'] - peaks['embedding']) / 2**30:.2f} GiB"
    )
    print(
        json.dumps(
            {
                "keras": keras_mode,
                "rows": args.rows,
                "embedding_peak_bytes": peaks["embedding"],
                "mpe_peak_bytes": peaks["mpe"],
                "peak_ratio": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
