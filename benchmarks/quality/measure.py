"""One result row per method and seed: test metrics, sizes and times.

Every method is scored by the same numpy code on its predictions: AUC by
the rank-sum formula and LogLoss for CTR, RMSE for ratings. Sizes are the
table's payload bits (bits per stored element) and real bytes (what the
converted layer stores, as exported); compression is relative to the
float32 table.
"""

import numpy as np

import keras_mpe
from benchmarks import timing


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


def scores(model, data) -> dict:
    """Test metrics from predictions, the same numpy code for every method."""
    labels = np.concatenate([y for _, y in data.test.as_numpy_iterator()])
    predictions = model.predict(data.test, verbose=0).reshape(labels.shape)
    if data.rating:
        return {"rmse": float(np.sqrt(np.mean((predictions - labels) ** 2)))}
    labels, p = labels.ravel(), np.clip(predictions.ravel(), 1e-7, 1 - 1e-7)
    logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return {"auc": auc(labels, p), "logloss": float(logloss)}


def predict_seconds(model, data) -> float:
    """Median seconds to predict 8 test batches, one batch per call."""
    batches = [x for x, _ in data.test.take(8)]

    def run():
        for x in batches:
            model.predict_on_batch(x)

    return timing.time_call(run, repeats=5)


def result(method, model, data, epoch_seconds, rows, dim, **sizes) -> dict:
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


def served(method, model, data, seconds, extra=None) -> dict:
    """Converts `model` (one MPE table) and scores the converted model.

    The row adds to `result`'s the table's average bits and, per
    frequency group, its chosen bits and mean lookups per row.
    """
    serving_model = keras_mpe.convert(model)
    (table,) = keras_mpe.compression_report(serving_model).layers
    (layer,) = keras_mpe.find_layers(model)
    groups = layer.group_summary()
    row = result(
        method, serving_model, data, seconds, table.rows, table.dim,
        payload_bits=table.payload_bits, real_bytes=table.real_bytes,
    )  # fmt: skip
    row["average_bits"] = layer.average_bits()
    row["group_bits"] = groups.bits.tolist()
    row["group_frequency"] = (
        groups.count / np.maximum(groups.rows, 1)
    ).tolist()
    row.update(extra or {})
    return row
