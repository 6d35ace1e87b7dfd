"""Quality, size and speed of MPE against fp32, uniform and post-training.

On one data set, one split per seed and one backbone, for each seed:

| method        | what it is                                                  |
|---------------|-------------------------------------------------------------|
| fp32          | float embedding trained from scratch                        |
| fp16, int8,   | post-training storage of the fp32 table: fp16, per-row int8 |
| int4          | and int4 (Keras 3's `Embedding.quantize` in Keras 3 mode;   |
|               | the same per-row formulas in numpy under tf_keras)          |
| qat8 .. qat2  | uniform-bit quantization-aware training (LSQ+): the MPE     |
|               | layer with one candidate, from the first step               |
| heuristic     | mixed precision without search: bits rise with log group    |
|               | frequency, to the budget MPE chose at `--budget-penalty`,   |
|               | from the first step                                         |
| control6      | the MPE pipeline (search, rewind, retrain) with one 6-bit   |
|               | candidate: what the two stages do without mixed precision  |
| mpe@lambda    | MPE at each bit penalty in `--penalties` (with              |
|               | `--target-bits B`: mpe@lambda/Bb, bits chosen to B per      |
|               | element)                                                    |

Every model keeps the weights of its best validation epoch (for MPE,
of the retraining epochs). Printed and written to `--out`: test AUC and
LogLoss (RMSE for MovieLens) as mean +- std over seeds, the paired
difference to fp32 (mean +- standard error over seeds of method - fp32 on
the same split: the splits differ by seed and move AUC by about 0.01,
more than most differences between methods), payload and real
compression of the table (real bytes of the converted layer, as exported),
median train seconds per epoch and predict time, both relative to fp32,
plus `results.json`, `results.md` and PNG plots.

    python benchmarks/quality.py --data criteo --seeds 3
    python benchmarks/quality.py --data synthetic --rows 2000000 \
        --max-cardinality 200000 --seeds 1

`--data criteo|avazu|kdd12|movielens` read the samples in ../shared/data
(or `--path`); the run stops with a message when they are absent.
`--no-batchnorm` drops the MLP's BatchNorm layers and `--mlp ''` its
hidden layers (a logistic regression on the embeddings), for every method.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=".*shuffle=True.*")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import timing  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import _compat  # noqa: E402
from keras_mpe import datasets  # noqa: E402
from keras_mpe import frequency  # noqa: E402

keras = _compat.keras
tf.get_logger().setLevel("ERROR")

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = {
    "criteo": (datasets.read_criteo, "criteo/criteo_dac_head8000.txt"),
    "avazu": (datasets.read_avazu, "avazu/avazu_train_head8999.csv"),
    "kdd12": (datasets.read_kdd12, "kdd12/kdd12_click_prediction_small.csv"),
    "movielens": (datasets.read_movielens, "movielens/ml-100k"),
}
CANDIDATES = (0, 1, 2, 3, 4, 5, 6)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="criteo", choices=["synthetic", *SAMPLES]
    )
    parser.add_argument("--path", help="file or folder instead of ../shared")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first..first+n-1"
    )
    parser.add_argument(
        "--methods",
        default="fp32,post,qat,heuristic,control6,mpe",
        help="comma-separated subset of: fp32 (always run), post, qat, "
        "heuristic, control6, mpe",
    )
    parser.add_argument(
        "--penalties", default="3e-4,1e-3,3e-3,1e-2", help="MPE lambdas"
    )
    parser.add_argument(
        "--budget-penalty",
        type=float,
        default=3e-3,
        help="the heuristic gets the bits MPE chose at this penalty",
    )
    parser.add_argument(
        "--target-bits",
        type=float,
        help="MPE runs choose their bits to this many per element "
        "(MPECallback's target_bits; the method is then named "
        "mpe@lambda/<bits>b); default: the reference threshold",
    )
    parser.add_argument("--qat-bits", default="8,6,4,2")
    parser.add_argument("--num-groups", type=int, default=128)
    parser.add_argument(
        "--temperature",
        type=float,
        help="MixedPrecisionEmbedding temperature; default: the layer's "
        "0.1 on synthetic data, the reference's 3e-3 on the small real "
        "samples (their ~50 search steps barely move logits at 0.1)",
    )
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--epochs", type=int, help="fp32 / retrain epochs")
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--init-std",
        type=float,
        default=0.003,
        help="table init N(0, std^2) for every method (the reference's)",
    )
    parser.add_argument(
        "--mlp", help="hidden units, e.g. 1024,512,256; '' for none"
    )
    parser.add_argument(
        "--no-batchnorm",
        dest="batchnorm",
        action="store_false",
        help="hidden layers without BatchNormalization",
    )
    parser.add_argument(
        "--fixed-warmup-epochs",
        type=int,
        default=0,
        help="QAT / heuristic: float epochs before quantizing (LSQ step "
        "sizes then come from the trained table); 0 quantizes from the "
        "first step, as uniform QAT is trained",
    )
    parser.add_argument(
        "--no-rewind",
        dest="rewind",
        action="store_false",
        help="MPE / control: retrain from the searched table instead of "
        "rewinding it to its initial values (MPECallback's "
        "rewind_embeddings=False)",
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--max-cardinality", type=int, default=200_000)
    parser.add_argument("--out", help="results folder")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redo the table and plots from --out/results.json",
    )
    args = parser.parse_args()
    if args.fixed_warmup_epochs < 0:
        parser.error(
            "--fixed-warmup-epochs must be 0 or more. Received: "
            f"{args.fixed_warmup_epochs}"
        )
    real = args.data != "synthetic"
    ratings = args.data == "movielens"
    defaults = {
        "epochs": 6 if real else 2,
        "batch_size": 1024 if ratings else (250 if real else 4096),
        "mlp": "1024,512,256" if real and not ratings else "256,128",
        "temperature": 3e-3 if real else 0.1,
        "out": f"benchmarks/results/{args.data}",
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.mlp = [int(u) for u in args.mlp.split(",") if u]
    args.methods = set(args.methods.split(","))
    args.penalties = [float(p) for p in args.penalties.split(",")]
    args.qat_bits = [int(b) for b in args.qat_bits.split(",")]
    return args


# ----------------------------------------------------------------- the data
@dataclasses.dataclass
class Data:
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    vocabulary_size: int
    rating: bool  # regression (RMSE) instead of CTR (AUC, LogLoss)

    @property
    def monitor(self) -> str:
        return "val_rmse" if self.rating else "val_auc"


def load_data(args, seed) -> Data:
    if args.data == "synthetic":
        return synthetic_data(args, seed)
    reader, relative = SAMPLES[args.data]
    path = pathlib.Path(args.path) if args.path else SHARED / relative
    if not path.exists():
        raise SystemExit(f"{path} is absent: pass --path or --data synthetic")
    raw = reader(path, seed=seed)
    if args.data == "movielens":
        users = raw["vocabulary_sizes"]["user_id"]
        vocabulary = users + raw["vocabulary_sizes"]["movie_id"]
        for part in ("train", "val", "test"):
            features, ratings = raw[part]
            ids = np.stack(
                [features["user_id"], features["movie_id"] + users], axis=1
            )
            raw[part] = (ids, ratings)
    else:
        vocabulary = raw["vocabulary_size"]

    def batches(part, shuffle=False):
        ids, labels = raw[part]
        data = tf.data.Dataset.from_tensor_slices(
            ({"categorical": ids}, labels)
        )
        if shuffle:
            data = data.shuffle(len(ids), seed=seed)
        return data.batch(args.batch_size).cache()

    return Data(
        batches("train", shuffle=True),
        batches("val"),
        batches("test"),
        vocabulary,
        rating=args.data == "movielens",
    )


def synthetic_data(args, seed) -> Data:
    """The built-in generator, ids re-ranked by their training counts.

    The generator's ids follow its Zipf ranks; a deployment's vocabulary
    (an adapted StringLookup) follows the counts of the data it was
    adapted on. Re-ranking by the training split's counts gives that
    frequency order, which is what the packed tables' compact index needs.
    """
    held_out = max(args.rows // 10, 1)
    vocabulary = sum(datasets.field_cardinalities(args.max_cardinality))

    def part(rows, first):
        return datasets.criteo_like(
            rows,
            batch_size=args.batch_size,
            first_row=first,
            max_cardinality=args.max_cardinality,
            seed=seed,
        )

    counts = np.zeros(vocabulary, np.int64)
    for features, _ in part(args.rows, 0).as_numpy_iterator():
        counts += np.bincount(
            features["categorical"].ravel(), minlength=vocabulary
        )
    rank = np.empty(vocabulary, np.int32)
    rank[np.argsort(-counts, kind="stable")] = np.arange(vocabulary)
    rank = tf.constant(rank)

    def reranked(features, labels):
        ids = tf.gather(rank, features["categorical"])
        numeric = tf.math.log1p(features["numeric"])
        return {"categorical": ids, "numeric": numeric}, labels

    def ready(rows, first):
        return part(rows, first).map(reranked).cache()

    return Data(
        ready(args.rows, 0),
        ready(held_out, args.rows),
        ready(held_out, args.rows + held_out),
        vocabulary,
        rating=False,
    )


# ---------------------------------------------------------------- the model
def backbone(embedding, data, args):
    """Embeddings (+ numeric) -> MLP (Dense, BatchNorm, ReLU) -> output."""
    features = data.train.element_spec[0]
    fields = features["categorical"].shape[-1]
    categorical = keras.Input((fields,), dtype="int32", name="categorical")
    inputs = {"categorical": categorical}
    x = keras.layers.Flatten()(embedding(categorical))
    if "numeric" in features:
        numeric = keras.Input((features["numeric"].shape[-1],), name="numeric")
        inputs["numeric"] = numeric
        x = keras.layers.Concatenate()([x, numeric])
    for units in args.mlp:
        x = keras.layers.Dense(units)(x)
        if args.batchnorm:
            x = keras.layers.BatchNormalization(momentum=0.9)(x)  # PyTorch's
        x = keras.layers.ReLU()(x)
    activation = None if data.rating else "sigmoid"
    model = keras.Model(inputs, keras.layers.Dense(1, activation)(x))
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        "mse" if data.rating else "binary_crossentropy",
        metrics=[
            keras.metrics.RootMeanSquaredError(name="rmse")
            if data.rating
            else keras.metrics.AUC(name="auc")
        ],
    )
    return model


class BestEpoch(keras.callbacks.Callback):
    """Keeps the weights of the best validation epoch from `start` on, and
    the wall time of every epoch."""

    def __init__(self, monitor, start=0):
        super().__init__()
        self.monitor, self.start = monitor, start
        self.best, self.weights, self.epoch_seconds = None, None, []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._started)
        value = logs[self.monitor]
        if self.monitor.endswith("rmse"):
            value = -value
        if epoch >= self.start and (self.best is None or value > self.best):
            self.best, self.weights = value, self.model.get_weights()

    def on_train_end(self, logs=None):
        self.model.set_weights(self.weights)


def fit(model, data, epochs, start=0, callbacks=()):
    """Trains, keeps the best validation epoch from `start` on, and returns
    the seconds of every epoch."""
    best = BestEpoch(data.monitor, start)
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=epochs,
        callbacks=[*callbacks, best],
        verbose=0,
    )
    return best.epoch_seconds


def median_seconds(seconds):
    """Median epoch time; the first epoch traces the step function, so it
    counts only when there is no other."""
    return statistics.median(seconds[1:] or seconds)


def scores(model, data) -> dict:
    """Test metrics from predictions, the same numpy code for every method."""
    labels = np.concatenate([y for _, y in data.test.as_numpy_iterator()])
    predictions = model.predict(data.test, verbose=0).reshape(labels.shape)
    if data.rating:
        return {"rmse": float(np.sqrt(np.mean((predictions - labels) ** 2)))}
    labels, p = labels.ravel(), np.clip(predictions.ravel(), 1e-7, 1 - 1e-7)
    logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return {"auc": auc(labels, p), "logloss": float(logloss)}


def auc(labels, predictions) -> float:
    """Area under the ROC curve by the rank-sum formula (ties averaged)."""
    order = np.argsort(predictions, kind="stable")
    ranks = np.empty(len(order))
    sorted_p = predictions[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    positives = labels.sum()
    negatives = len(labels) - positives
    rank_sum = ranks[labels == 1].sum()
    return float(
        (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    )


def predict_seconds(model, data):
    batches = [x for x, _ in data.test.take(8)]

    def run():
        for x in batches:
            model.predict_on_batch(x)

    return timing.time_call(run, repeats=5)


# ------------------------------------------------------------- the methods
def result(method, model, data, epoch_seconds, rows, dim, **sizes):
    """One result row: metrics, sizes (payload bits, real bytes), times."""
    return {
        "method": method,
        **scores(model, data),
        "payload_compression": 32.0 * rows * dim / sizes["payload_bits"],
        "payload_bits": int(sizes["payload_bits"]),
        "real_bytes": int(sizes["real_bytes"]),
        "real_compression": 4.0 * rows * dim / sizes["real_bytes"],
        "epoch_seconds": epoch_seconds,
        "predict_seconds": predict_seconds(model, data),
    }


def run_fp32(data, args):
    model = backbone(
        keras.layers.Embedding(
            data.vocabulary_size, args.dim, embeddings_initializer=init(args)
        ),
        data,
        args,
    )
    seconds = median_seconds(fit(model, data, args.epochs))
    rows, dim = data.vocabulary_size, args.dim
    out = [
        result(
            "fp32", model, data, seconds, rows, dim,
            payload_bits=32 * rows * dim, real_bytes=4 * rows * dim,
        )
    ]  # fmt: skip
    return model, out


def post_training(fp32_model, data, args, fp32_seconds):
    """fp16, int8 and int4 storage of the trained fp32 table."""
    table_layer = next(
        layer
        for layer in fp32_model.layers
        if isinstance(layer, keras.layers.Embedding)
    )
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
        elif _compat.IS_KERAS_3:
            layer.quantize(name)  # Keras' own per-row quantization
            real = sum(int(np.prod(w.shape)) * _itemsize(w)
                       for w in layer.weights)  # fmt: skip
        else:
            layer.set_weights([per_row_round_trip(table, bits)])
            real = rows * dim * bits // 8 + rows * (4 if bits == 8 else 5)
        out.append(
            result(
                name, model, data, fp32_seconds, rows, dim,
                payload_bits=bits * rows * dim, real_bytes=real,
            )
        )  # fmt: skip
    return out


def _itemsize(weight):
    return np.dtype(_compat.keras.backend.standardize_dtype(weight.dtype)
                    ).itemsize  # fmt: skip


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


def mpe_layer(data, args, candidates=CANDIDATES, penalty=0.0):
    return keras_mpe.MixedPrecisionEmbedding(
        data.vocabulary_size,
        args.dim,
        bit_candidates=candidates,
        num_groups=args.num_groups,
        bit_penalty=penalty,
        temperature=args.temperature,
        embeddings_initializer=init(args),
    )


def init(args):
    return keras.initializers.RandomNormal(stddev=args.init_std)


def served(method, model, data, seconds, extra=None):
    """Converts `model` and reports the converted table's real size."""
    serving_model = keras_mpe.convert(model)
    (table,) = keras_mpe.compression_report(serving_model).layers
    layer = next(
        x for x in model.layers
        if isinstance(x, keras_mpe.MixedPrecisionEmbedding)
    )  # fmt: skip
    groups = layer.bits_per_group()
    row = result(
        method, serving_model, data, seconds, table.rows, table.dim,
        payload_bits=table.payload_bits, real_bytes=table.real_bytes,
    )  # fmt: skip
    row["average_bits"] = layer.average_bits()
    row["group_bits"] = groups["bits"].tolist()
    row["group_frequency"] = (
        groups["count"] / np.maximum(groups["rows"], 1)
    ).tolist()
    row.update(extra or {})
    return row


class QuantizeAfterWarmup(keras.callbacks.Callback):
    """After `warmup` float epochs: LSQ step sizes from the table as it is
    then, and the layer trains at `bits` (one per group)."""

    def __init__(self, layer, bits, warmup):
        super().__init__()
        self.layer, self.bits, self.warmup = layer, bits, warmup

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.warmup:
            self.layer.initialize_step_sizes()
            self.layer.set_bits(self.bits)


def run_fixed(method, bits_for, data, args, candidates):
    """`--fixed-warmup-epochs` float epochs (default none: quantized from
    the first step), then `--epochs` at fixed bits per group
    (`bits_for(layer)`); the best validation epoch among the latter."""
    layer = mpe_layer(data, args, candidates)
    model = backbone(layer, data, args)
    (counts,) = frequency.count_ids(model, [layer], data.train)
    layer.set_frequencies(counts)
    warmup = args.fixed_warmup_epochs
    quantize = QuantizeAfterWarmup(layer, bits_for(layer), warmup)
    seconds = fit(
        model, data, warmup + args.epochs, start=warmup, callbacks=[quantize]
    )
    return served(method, model, data, median_seconds(seconds[warmup:]))


def run_pipeline(method, data, args, candidates, penalty, target_bits=None):
    """Search + select (to `target_bits` if given) + rewind + retrain with
    MPECallback."""
    layer = mpe_layer(data, args, candidates, penalty)
    model = backbone(layer, data, args)
    callback = keras_mpe.MPECallback(
        frequency_data=data.train,
        search_epochs=args.search_epochs,
        monitor=data.monitor,
        mode="min" if data.rating else "max",
        rewind_embeddings=args.rewind,
        target_bits=target_bits,
        verbose=0,
    )
    search = args.search_epochs
    seconds = fit(
        model, data, search + args.epochs, start=search, callbacks=[callback]
    )
    return served(
        method,
        model,
        data,
        median_seconds(seconds),
        {
            "search_epoch_seconds": median_seconds(seconds[:search]),
            "retrain_epoch_seconds": median_seconds(seconds[search:]),
        },
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


def run_seed(data, args, seed):
    """Every method on one split; prints each result as it is done."""
    rows = []

    def add(row):
        fp32 = rows[0] if rows else row
        row["seed"] = seed
        row["train_time_vs_fp32"] = row["epoch_seconds"] / fp32["epoch_seconds"]
        row["predict_time_vs_fp32"] = (
            row["predict_seconds"] / fp32["predict_seconds"]
        )
        rows.append(row)
        print(_one_line(row), flush=True)

    keras.utils.set_random_seed(seed)
    fp32_model, fp32_rows = run_fp32(data, args)
    for row in fp32_rows:
        add(row)
    if "post" in args.methods:
        for row in post_training(
            fp32_model, data, args, rows[0]["epoch_seconds"]
        ):
            add(row)
    if "qat" in args.methods:
        for bits in args.qat_bits:
            keras.utils.set_random_seed(seed)
            add(
                run_fixed(
                    f"qat{bits}",
                    lambda layer, b=bits: np.full(layer.num_groups, b),
                    data, args, (bits,),
                )
            )  # fmt: skip
    if "control6" in args.methods:
        keras.utils.set_random_seed(seed)
        add(run_pipeline("control6", data, args, (6,), 0.0))
    budget = None
    if "mpe" in args.methods:
        for penalty in args.penalties:
            keras.utils.set_random_seed(seed)
            target = args.target_bits
            name = f"mpe@{penalty:g}"
            if target is not None:
                name += f"/{target:g}b"
            row = run_pipeline(name, data, args, CANDIDATES, penalty, target)
            row["penalty"] = penalty
            add(row)
            if penalty == args.budget_penalty:
                budget = row["average_bits"]
    if "heuristic" in args.methods and budget is not None:
        keras.utils.set_random_seed(seed)

        def heuristic_bits(layer):
            groups = layer.bits_per_group()
            frequency_ = groups["count"] / np.maximum(groups["rows"], 1)
            return bits_by_frequency(
                frequency_, groups["rows"], CANDIDATES, budget
            )

        add(run_fixed("heuristic", heuristic_bits, data, args, CANDIDATES))
    return rows


def _one_line(row):
    metric = " ".join(
        f"{k} {row[k]:.4f}" for k in ("auc", "logloss", "rmse") if k in row
    )
    return (
        f"seed {row['seed']} {row['method']:>12}: {metric}  payload "
        f"{row['payload_compression']:.1f}x real {row['real_compression']:.1f}x"
        f"  train {row['train_time_vs_fp32']:.2f}x predict "
        f"{row['predict_time_vs_fp32']:.2f}x"
    )


# ---------------------------------------------------------------- summaries
def summarize(rows, metrics):
    """Mean and std over seeds per method, in the order methods first ran,
    and the paired difference to fp32 in the first metric."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns = [
        *metrics, "payload_compression", "real_compression",
        "train_time_vs_fp32", "predict_time_vs_fp32",
    ]  # fmt: skip
    baseline = {r["seed"]: r[metrics[0]] for r in rows if r["method"] == "fp32"}
    summary = []
    for method in methods:
        runs = [r for r in rows if r["method"] == method]
        entry = {"method": method, "seeds": len(runs)}
        for column in columns:
            values = np.array([r[column] for r in runs], np.float64)
            entry[column] = (float(values.mean()), float(values.std()))
        entry["vs_fp32"] = _paired_difference(runs, baseline, metrics[0])
        summary.append(entry)
    return summary


def _paired_difference(runs, baseline, metric):
    """Mean and standard error over seeds of (method - fp32) on the same
    split. The splits differ by seed, so this is far tighter than the
    difference of the two means; None without fp32 runs to pair with."""
    differences = [
        r[metric] - baseline[r["seed"]] for r in runs if r["seed"] in baseline
    ]
    if not differences:
        return None
    values = np.array(differences, np.float64)
    spread = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0
    return float(values.mean()), float(spread)


def markdown(summary, metrics, header):
    titles = [
        "method", "seeds", *metrics, f"{metrics[0]} - fp32, same split",
        "payload x", "real x", "train time / fp32", "predict time / fp32",
    ]  # fmt: skip
    lines = [header, "", "| " + " | ".join(titles) + " |"]
    lines.append("|" + "---|" * len(titles))
    for entry in summary:
        cells = [entry["method"], str(entry["seeds"])]
        for metric in metrics:
            mean, std = entry[metric]
            cells.append(f"{mean:.4f} +- {std:.4f}")
        paired = entry["vs_fp32"]
        cells.append(f"{paired[0]:+.4f} +- {paired[1]:.4f}" if paired else "-")
        cells += [
            f"{entry['payload_compression'][0]:.1f}",
            f"{entry['real_compression'][0]:.1f}",
            f"{entry['train_time_vs_fp32'][0]:.2f}",
            f"{entry['predict_time_vs_fp32'][0]:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, rows, metric, out):
    """metric vs payload compression; bits per group vs group frequency."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(7, 4.5))
    colors = pyplot.get_cmap("tab20").colors
    markers = {"fp": "s", "in": "s", "qa": "^", "mp": "o"}
    for i, entry in enumerate(summary):
        mean, std = entry[metric]
        axis.errorbar(
            entry["payload_compression"][0], mean, yerr=std, capsize=3,
            fmt=markers.get(entry["method"][:2], "D"),
            color=colors[i % len(colors)], label=entry["method"],
        )  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("payload compression (x, log scale)")
    axis.set_ylabel(f"test {metric} (mean +- std over seeds)")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / f"{metric}_vs_compression.png", dpi=120)

    figure, axis = pyplot.subplots(figsize=(7, 4.5))
    first_seed = min(r["seed"] for r in rows)
    for row in rows:
        if row["seed"] == first_seed and row["method"].startswith("mpe"):
            axis.plot(
                np.maximum(row["group_frequency"], 1e-3), row["group_bits"],
                "o-", markersize=3, label=row["method"],
            )  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("mean lookups per row in the group (log scale)")
    axis.set_ylabel("chosen bits")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "bits_per_group.png", dpi=120)
    pyplot.close("all")


def main():
    args = parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = ["rmse"] if args.data == "movielens" else ["auc", "logloss"]
    if args.replot:
        saved = json.loads((out / "results.json").read_text())
        settings, rows = saved["settings"], saved["runs"]
    else:
        settings, rows = run(args, out)
    summary = summarize(rows, metrics)
    seeds = len({row["seed"] for row in rows})
    header = (
        f"### {settings['data']}: {seeds} seeds, Keras "
        f"{settings['keras']}, {settings['minutes']:.0f} min\n\n"
        f"Settings: `{json.dumps(settings)}`"
    )
    table = markdown(summary, metrics, header)
    print("\n" + table)
    (out / "results.md").write_text(table)
    plot(summary, rows, metrics[0], out)
    print(f"written to {out}/")


def run(args, out):
    """Every seed; returns the settings and one row per method and seed."""
    settings = {k: sorted(v) if isinstance(v, set) else v
                for k, v in vars(args).items() if k != "replot"}  # fmt: skip
    settings["keras"] = "3" if _compat.IS_KERAS_3 else "2 (tf_keras)"
    started = time.time()
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        data = load_data(args, seed)
        if seed == args.first_seed:
            print(
                f"{args.data}: vocabulary {data.vocabulary_size} ids, dim "
                f"{args.dim}, MLP {args.mlp}, Keras {settings['keras']}"
            )
        rows += run_seed(data, args, seed)
        settings["minutes"] = (time.time() - started) / 60
        (out / "results.json").write_text(
            json.dumps({"settings": settings, "runs": rows}, indent=1)
        )
    return settings, rows


if __name__ == "__main__":
    main()
