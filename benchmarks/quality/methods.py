"""The methods compared, one function each; each returns result rows.

| function        | method                                                |
|-----------------|-------------------------------------------------------|
| `run_fp32`      | float `Embedding` from scratch                        |
| `post_training` | fp16 / per-row int8 / int4 storage of the fp32 table  |
| `run_qat`       | uniform-bit QAT: one candidate, no search             |
| `run_heuristic` | bits rising with log group frequency, to a budget     |
|                 | (`bits_by_frequency`), no search                      |
| `run_control`   | the MPE pipeline with one 6-bit candidate             |
| `run_mpe`       | MPE at one bit penalty (and optional target bits)     |

QAT and the heuristic train at fixed bits per group (`run_fixed`); the
control and MPE run the whole pipeline with `keras_mpe.MPECallback`
(`run_pipeline`).
"""

import inspect

import numpy as np
import tensorflow as tf

import keras_mpe
from benchmarks.quality import measure
from benchmarks.quality import training
from keras_mpe import frequency

keras = tf.keras
# tf_keras's `tf.keras` has no `__version__`: it is Keras 2.
KERAS_3 = int(getattr(keras, "__version__", "2").split(".")[0]) >= 3
CANDIDATES = (0, 1, 2, 3, 4, 5, 6)
DEFAULT_PENALTY = (
    inspect.signature(keras_mpe.MixedPrecisionEmbedding)
    .parameters["bit_penalty"]
    .default
)


def mpe_layer(data, args, candidates=CANDIDATES, penalty=0.0):
    """The MPE table for `data`, with the benchmark's settings."""
    return keras_mpe.MixedPrecisionEmbedding(
        data.vocabulary_size,
        args.dim,
        bit_candidates=candidates,
        num_groups=args.num_groups,
        bit_penalty=penalty,
        temperature=args.temperature,
        embeddings_initializer=training.init(args),
    )


def run_fp32(data, args):
    """Trains the float model; returns it and its result row."""
    model = training.backbone(
        keras.layers.Embedding(
            data.vocabulary_size,
            args.dim,
            embeddings_initializer=training.init(args),
        ),
        data,
        args,
    )
    seconds = training.median_seconds(training.fit(model, data, args.epochs))
    rows, dim = data.vocabulary_size, args.dim
    out = [
        measure.result(
            "fp32", model, data, seconds, rows, dim,
            payload_bits=32 * rows * dim, real_bytes=4 * rows * dim,
        )
    ]  # fmt: skip
    return model, out


def post_training(fp32_model, data, args, fp32_seconds):
    """fp16, int8 and int4 storage of the trained fp32 table."""
    (table_layer,) = keras_mpe.find_layers(fp32_model, keras.layers.Embedding)
    table = table_layer.get_weights()[0]
    rows, dim = table.shape
    out = []
    for name, bits in (("fp16", 16), ("int8", 8), ("int4", 4)):
        model = keras.models.clone_model(fp32_model)
        model.set_weights(fp32_model.get_weights())
        layer = model.get_layer(table_layer.name)
        if bits == 16:
            layer.set_weights([table.astype(np.float16).astype(np.float32)])
            real = 2 * rows * dim
        elif KERAS_3:
            layer.quantize(name)  # Keras' own per-row quantization
            real = sum(int(np.prod(w.shape)) * _itemsize(w)
                       for w in layer.weights)  # fmt: skip
        else:
            layer.set_weights([per_row_round_trip(table, bits)])
            real = rows * dim * bits // 8 + rows * (4 if bits == 8 else 5)
        out.append(
            measure.result(
                name, model, data, fp32_seconds, rows, dim,
                payload_bits=bits * rows * dim, real_bytes=real,
            )
        )  # fmt: skip
    return out


def _itemsize(weight):
    return np.dtype(keras.backend.standardize_dtype(weight.dtype)).itemsize


def per_row_round_trip(table, bits):
    """Per-row quantize-dequantize as Keras 3 does it: int8 symmetric
    (abs max / 127), int4 asymmetric (min..max over 0..15)."""
    if bits == 8:
        scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        return np.round(table / scale).clip(-127, 127) * scale
    low = table.min(axis=1, keepdims=True)
    scale = (table.max(axis=1, keepdims=True) - low) / 15.0
    scale[scale == 0] = 1.0
    return np.round((table - low) / scale).clip(0, 15) * scale + low


class QuantizeAfterWarmup(keras.callbacks.Callback):
    """After `warmup` float epochs: LSQ step sizes from the table as it is
    then, and the layer trains at `bits` (one per group)."""

    def __init__(self, layer, bits, warmup):
        super().__init__()
        self.layer, self.bits, self.warmup = layer, bits, warmup

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.warmup:
            self.layer.initialize_step_sizes()
            self.layer.fix_bits(self.bits)


def run_fixed(method, bits_for, data, args, candidates):
    """`--fixed-warmup-epochs` float epochs (default none: quantized from
    the first step), then `--epochs` at fixed bits per group
    (`bits_for(layer)`); the best validation epoch among the latter."""
    layer = mpe_layer(data, args, candidates)
    model = training.backbone(layer, data, args)
    (counts,) = frequency.count_ids(model, [layer], data.train)
    layer.set_frequencies(counts)
    warmup = args.fixed_warmup_epochs
    quantize = QuantizeAfterWarmup(layer, bits_for(layer), warmup)
    seconds = training.fit(
        model, data, warmup + args.epochs, start=warmup, callbacks=[quantize]
    )
    return measure.served(
        method, model, data, training.median_seconds(seconds[warmup:])
    )


def run_qat(bits, data, args):
    """Uniform `bits`-bit QAT: every group at `bits` (method `qat<bits>`)."""
    return run_fixed(
        f"qat{bits}",
        lambda layer: np.full(layer.num_groups, bits),
        data,
        args,
        (bits,),
    )


def bits_by_frequency(group_frequency, group_rows, candidates, budget):
    """Bits rising with log2 group frequency, at most `budget` bits per row.

    b_g = the candidate nearest to clip(a + log2 f_g); `a` is the largest
    shift (found by bisection) whose row-weighted average fits the budget.
    Groups never looked up (f_g = 0) get the smallest candidate.
    """
    candidates = np.asarray(candidates)
    seen = np.asarray(group_frequency) > 0
    log_f = np.log2(np.where(seen, group_frequency, 1.0))

    def assign(a):
        wanted = np.clip(a + log_f, candidates.min(), candidates.max())
        nearest = np.abs(wanted[:, None] - candidates[None, :]).argmin(1)
        return np.where(seen, candidates[nearest], candidates.min())

    def average(bits):
        return np.dot(bits, group_rows) / group_rows.sum()

    low, high = -60.0, 60.0
    for _ in range(60):
        middle = (low + high) / 2
        if average(assign(middle)) <= budget:
            low = middle
        else:
            high = middle
    return assign(low)


def run_heuristic(budget, data, args):
    """Mixed precision without search: `bits_by_frequency` at `budget`
    bits per element (method `heuristic`)."""

    def heuristic_bits(layer):
        groups = layer.group_summary()
        group_frequency = groups.count / np.maximum(groups.rows, 1)
        return bits_by_frequency(
            group_frequency, groups.rows, CANDIDATES, budget
        )

    return run_fixed("heuristic", heuristic_bits, data, args, CANDIDATES)


def run_pipeline(
    method, data, args, candidates, penalty, target_bits=None, drop=None
):
    """Search + select (to `target_bits`, or within a validation metric
    `drop`, if given) + rewind (the tables to their start, the network to
    the search's) + retrain with MPECallback; the best validation epoch
    among the retraining ones."""
    layer = mpe_layer(data, args, candidates, penalty)
    model = training.backbone(layer, data, args)
    callback = keras_mpe.MPECallback(
        frequency_data=data.train,
        search_epochs=args.search_epochs,
        monitor=data.monitor,
        mode=data.mode,
        rewind_embeddings=args.rewind,
        rewind_network=args.rewind_network,
        target_bits=target_bits,
        max_metric_drop=drop,
        validation_data=data.val if drop is not None else None,
        verbose=0,
    )
    search = args.search_epochs
    seconds = training.fit(
        model, data, search + args.epochs, start=search, callbacks=[callback]
    )
    return measure.served(
        method,
        model,
        data,
        training.median_seconds(seconds),
        {
            "search_epoch_seconds": training.median_seconds(seconds[:search]),
            "retrain_epoch_seconds": training.median_seconds(seconds[search:]),
        },
    )


def run_control(data, args):
    """The pipeline with one 6-bit candidate and no penalty (`control6`)."""
    return run_pipeline("control6", data, args, (6,), 0.0)


def run_mpe(penalty, data, args):
    """MPE at bit penalty `penalty` (`mpe@<penalty>`), its bits chosen to
    `args.target_bits` per element (`mpe@<penalty>/<bits>b`) or within
    `args.max_metric_drop` (`mpe@<penalty>/drop<d>`) when given;
    `mpe@defaults` with `args.defaults`."""
    target, drop = args.target_bits, args.max_metric_drop
    name = f"mpe@{penalty:g}"
    if target is not None:
        name += f"/{target:g}b"
    if drop is not None:
        name += f"/drop{drop:g}"
    if args.defaults:
        name = "mpe@defaults"
    row = run_pipeline(name, data, args, CANDIDATES, penalty, target, drop=drop)
    row["penalty"] = penalty
    return row
