"""Training-step and counting-pass cost of MixedPrecisionEmbedding.

The large-table setting: 26 fields sharing one 1,000,000 x 16 table
(global ids, Zipf exponent 1.1), MLP 256-128, batch 4096, Adam. In one
process and on the same batches it times a training step with a plain
`tf.keras.layers.Embedding` and with MixedPrecisionEmbedding in each phase,
and the frequency-counting pass against `model.predict`, then prints
medians and ratios (ours / baseline). Run it in each Keras mode:

    python benchmarks/training_speed.py [--jit]
    TF_USE_LEGACY_KERAS=1 python benchmarks/training_speed.py [--jit]

The project's targets: search <= 1.5x and fixed (retrain) <= 1.15x a plain
`Embedding` step without XLA; counting <= 1.3x `model.predict`. The last
line is the ratios as one JSON object (`float_ratio`, `search_ratio`,
`fixed_ratio`, `counting_ratio`).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import serving_speed  # noqa: E402
import tensorflow as tf  # noqa: E402
import timing  # noqa: E402
import workload  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import frequency  # noqa: E402

keras = tf.keras


def parse_args():
    parser = workload.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=26, help="ids per row")
    parser.add_argument("--batch-size", type=int, default=4096, help="examples")
    parser.add_argument(
        "--batches", type=int, default=8, help="distinct batches"
    )
    parser.add_argument("--steps", type=int, default=10, help="per turn")
    parser.add_argument("--repeats", type=int, default=5, help="turns")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    return parser.parse_args()


def zipf_batches(args):
    """Distinct batches of Zipf(1.1) global ids and random labels."""
    rng = np.random.default_rng(0)
    shape = (args.batches * args.batch_size, args.fields)
    ids = workload.zipf_ids(args.rows, shape, rng)
    labels = rng.integers(0, 2, (shape[0], 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((ids, labels))
    return data.batch(args.batch_size).cache()


def build(embedding, args):
    model = workload.mlp(embedding, (args.fields,))
    model.compile(
        keras.optimizers.Adam(1e-3), "binary_crossentropy", jit_compile=args.jit
    )
    return model


def main():
    args = parse_args()
    data = zipf_batches(args)
    print(
        f"{workload.KERAS}, jit_compile={args.jit}: {args.rows} x "
        f"{args.dim} table, {args.fields} fields, batch {args.batch_size}, "
        f"medians of {args.repeats} x {args.steps} steps"
    )

    baseline = build(keras.layers.Embedding(args.rows, args.dim), args)
    layer = keras_mpe.MixedPrecisionEmbedding(args.rows, args.dim)
    model = build(layer, args)
    (counts,) = frequency.count_ids(model, [layer], data)
    layer.set_frequencies(counts)
    # The bits the synthetic quality benchmark learned (most groups
    # pruned, 2-6 bits for the most frequent).
    layer.fix_bits(serving_speed.learned_bits())
    variants = [("Embedding", baseline, lambda: None)]
    for phase in keras_mpe.Phase:
        variants.append(
            (
                f"MPE {phase.name} phase",
                model,
                lambda p=phase: layer.set_phase(p),
            )
        )
    seconds = timing.time_steps(variants, data, args.steps, args.repeats)
    base = seconds["Embedding"]
    figures = {"keras": workload.KERAS, "jit": args.jit}
    for name, value in seconds.items():
        print(f"{name:20s} {1e3 * value:8.1f} ms/step {value / base:6.2f}x")
    for phase in keras_mpe.Phase:
        ratio = seconds[f"MPE {phase.name} phase"] / base
        figures[f"{phase.name.lower()}_ratio"] = round(ratio, 3)
    print(f"average bits in FIXED: {layer.average_bits():.2f}")

    predict = timing.time_call(
        lambda: model.predict(data, verbose=0), args.repeats
    )
    count = timing.time_call(
        lambda: frequency.count_ids(model, [layer], data), args.repeats
    )
    print(f"predict pass         {1e3 * predict:8.1f} ms")
    print(
        f"counting pass        {1e3 * count:8.1f} ms   "
        f"{count / predict:6.2f}x predict"
    )
    figures["counting_ratio"] = round(count / predict, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
