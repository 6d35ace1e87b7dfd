"""compression_report(): what conversion did to each embedding table.

Two figures per table:

- payload bits = sum over rows of bits x output_dim: the reference figure
  (pruned rows count 0); payload compression = 32 x rows x dim / payload.
- real bytes = every byte the serving graph reads for that layer: packed
  codes (with their read padding), the row index (segments or ranks,
  see `fixed_bit.py`), step sizes, offset;
  real compression = float32 bytes / real bytes.
"""

import dataclasses

import numpy as np

from keras_mpe import _compat
from keras_mpe.fixed_bit import FixedBitEmbedding
from keras_mpe.model_layers import find_layers


@dataclasses.dataclass
class LayerReport:
    """The compression of one FixedBitEmbedding.

    Attributes:
        name: The layer's name.
        rows: Vocabulary size.
        dim: Row width.
        rows_per_bits: Dict bits -> number of rows stored at that width.
        groups: Dict of per-group lists ("bits", "rows", "count"; group 0
            the rarest) from the search, or None.
        payload_bits: Sum over rows of bits x dim.
        real_bytes: Bytes of every variable the lookup reads.
        float32_bytes: 4 x rows x dim.
    """

    name: str
    rows: int
    dim: int
    rows_per_bits: dict
    groups: dict
    payload_bits: int
    real_bytes: int
    float32_bytes: int

    @property
    def payload_compression(self) -> float:
        return 8 * self.float32_bytes / max(self.payload_bits, 1)

    @property
    def real_compression(self) -> float:
        return self.float32_bytes / self.real_bytes


@dataclasses.dataclass
class CompressionReport:
    """Per-layer compression, and a metric before and after if measured."""

    layers: list
    metric_name: str = None
    metric_before: float = None
    metric_after: float = None

    def as_dict(self) -> dict:
        """Plain values for scripts (JSON serializable)."""
        result = {
            "layers": [
                dict(
                    dataclasses.asdict(layer),
                    payload_compression=layer.payload_compression,
                    real_compression=layer.real_compression,
                )
                for layer in self.layers
            ]
        }
        if self.metric_name:
            result["metric"] = {
                "name": self.metric_name,
                "before": self.metric_before,
                "after": self.metric_after,
            }
        return result

    def plot(self, path=None):
        """Draws each table's bits per group against lookups per row.

        One line per layer, a point per frequency group (x: the group's
        lookups per row, log scale; y: its bits), the picture of where
        the bits went. Needs matplotlib (`pip install "keras-mpe[plots]"`).

        Args:
            path: String or None. Where to save the figure (PNG by the
                file's extension); None only returns it.

        Returns:
            The matplotlib `Figure`.
        """
        figure = plot_groups(
            [
                (
                    f"{layer.name} ({layer.payload_compression:.1f}x)",
                    layer.groups,
                )
                for layer in self.layers
                if layer.groups
            ]
        )
        if path is not None:
            figure.savefig(path, dpi=120)
        return figure

    def __str__(self) -> str:
        width = max([5] + [len(layer.name) for layer in self.layers])
        lines = [
            f"{'layer':{width}s} {'rows':>10s} {'payload':>12s} {'x':>7s} "
            f"{'real bytes':>12s} {'x':>7s} {'float32':>12s}  rows per bits"
        ]
        for layer in self.layers:
            lines.append(
                f"{layer.name:{width}s} {layer.rows:10d} "
                f"{layer.payload_bits // 8:12d} "
                f"{layer.payload_compression:7.1f} {layer.real_bytes:12d} "
                f"{layer.real_compression:7.1f} {layer.float32_bytes:12d}  "
                f"{layer.rows_per_bits}"
            )
            if layer.groups:
                lines.append("  group (rarest first): bits / lookups")
                pairs = zip(
                    layer.groups["bits"], layer.groups["count"], strict=True
                )
                lines.append("  " + " ".join(f"{b}/{c}" for b, c in pairs))
        if self.metric_name:
            lines.append(
                f"{self.metric_name}: before {self.metric_before:.5f}, "
                f"after {self.metric_after:.5f}"
            )
        return "\n".join(lines)


def plot_groups(tables) -> "matplotlib.figure.Figure":  # noqa: F821
    """Bits per group against lookups per row, one line per table.

    Args:
        tables: `(label, groups)` pairs; `groups` holds per-group
            sequences "bits", "rows" and "count" (group 0 the rarest).

    Returns:
        A matplotlib `Figure` (matplotlib is an optional extra).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'Plotting needs matplotlib: pip install "keras-mpe[plots]"'
        ) from error
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.subplots()
    for label, groups in tables:
        rows = np.maximum(np.asarray(groups["rows"], float), 1)
        per_row = np.asarray(groups["count"], float) / rows
        # Groups never looked up sit at the left edge of the log axis.
        floor = per_row[per_row > 0].min() / 2 if per_row.any() else 1
        axes.plot(
            np.maximum(per_row, floor),
            groups["bits"],
            marker="o",
            markersize=3,
            label=label,
        )
    axes.set_xscale("log")
    axes.set_xlabel("lookups per row in the group (frequency data)")
    axes.set_ylabel("bits per element")
    axes.set_title("Chosen bits per frequency group")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def _layer_report(layer) -> LayerReport:
    rows_per_bits = layer.rows_per_bits()
    real_bytes = sum(
        int(np.prod(w.shape)) * np.dtype(_dtype_name(w)).itemsize
        for w in layer.weights
    )
    return LayerReport(
        name=layer.name,
        rows=layer.input_dim,
        dim=layer.output_dim,
        rows_per_bits=rows_per_bits,
        # (tf_keras wraps dict attributes of layers for tracking.)
        groups={k: list(v) for k, v in layer.groups.items()}
        if layer.groups
        else None,
        payload_bits=layer.output_dim
        * sum(bits * rows for bits, rows in rows_per_bits.items()),
        real_bytes=real_bytes,
        float32_bytes=4 * layer.input_dim * layer.output_dim,
    )


def _dtype_name(weight) -> str:
    dtype = weight.dtype
    return dtype if isinstance(dtype, str) else dtype.name


def compression_report(
    serving_model, original_model=None, data=None, metric=None
) -> CompressionReport:
    """Reports the compression of every FixedBitEmbedding in a model.

    Example:

    ```python
    serving = keras_mpe.convert(model)
    print(keras_mpe.compression_report(serving))
    report = keras_mpe.compression_report(
        serving, model, test_ds, tf.keras.metrics.AUC())
    report.as_dict()["metric"]
    ```

    Args:
        serving_model: A model returned by `keras_mpe.convert`.
        original_model: The model before conversion; with `data` and
            `metric`, the metric is measured on both. (For subclassed
            models `convert` works in place: pass a copy made before.)
        data: Dataset of `(x, y)` batches.
        metric: A Keras metric instance (reset before each model).

    Returns:
        A `CompressionReport` (print it, or call `as_dict()`).
    """
    layers = [
        _layer_report(layer)
        for layer in find_layers(serving_model, FixedBitEmbedding)
    ]
    if not layers:
        raise ValueError(
            f"compression_report: model '{serving_model.name}' has no "
            "FixedBitEmbedding; run keras_mpe.convert(model) first."
        )
    report = CompressionReport(layers)
    if data is not None or metric is not None:
        if data is None or metric is None or original_model is None:
            raise ValueError(
                "compression_report: measuring a metric needs "
                "original_model, data and metric together."
            )
        report.metric_name = metric.name
        report.metric_before = _measure(original_model, data, metric)
        report.metric_after = _measure(serving_model, data, metric)
    return report


def _measure(model, data, metric) -> float:
    metric.reset_state()
    for batch in data:
        x, y, _ = _compat.keras.utils.unpack_x_y_sample_weight(batch)
        metric.update_state(y, model(x, training=False))
    return float(metric.result())
