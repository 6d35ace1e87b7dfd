"""TensorBoard summaries of a search: what `MPECallback(log_dir=...)` writes.

Under `<log_dir>/mpe`, at the end of every epoch (the step is the epoch):

| tag                      | kind      | when              | what             |
|--------------------------|-----------|-------------------|------------------|
| `mpe_bits`               | scalar    | every epoch       | average bits per |
|                          |           |                   | element          |
| `mpe_compression`        | scalar    | every epoch       | 32 / `mpe_bits`  |
| `<layer>/expected_bits`  | histogram | search epochs     | each group's     |
|                          |           |                   | expected bits    |
| `<layer>/bits_per_group` | image     | first fixed epoch | chosen bits vs   |
|                          |           |                   | lookups per row  |

TensorBoard is an optional extra (`pip install "keras-mpe[tensorboard]"`);
the image also needs matplotlib, and is skipped, with a message, without.
"""

import io
import os

import tensorflow as tf

from keras_mpe import _compat
from keras_mpe.embedding import Phase
from keras_mpe.report import plot_groups


def check_tensorboard():
    """Raises an ImportError unless `tf.summary` can write."""
    try:
        import tensorboard  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "MPECallback(log_dir=...) writes TensorBoard summaries, which "
            'need tensorboard: pip install "keras-mpe[tensorboard]"'
        ) from error


class SearchSummaries:
    """Writes the summaries of the table above to `<log_dir>/mpe`."""

    def __init__(self, log_dir):
        check_tensorboard()
        self.writer = tf.summary.create_file_writer(
            os.path.join(os.fspath(log_dir), "mpe")
        )
        self.drawn = set()

    def write(self, epoch: int, layers: list, bits: float):
        with self.writer.as_default(step=epoch):
            tf.summary.scalar("mpe_bits", bits)
            tf.summary.scalar(
                "mpe_compression", 32.0 / bits if bits else float("inf")
            )
            for layer in layers:
                if layer.phase == Phase.SEARCH:
                    tf.summary.histogram(
                        f"{layer.name}/expected_bits",
                        layer.group_summary().expected_bits,
                    )
                elif layer.phase == Phase.FIXED and layer not in self.drawn:
                    self._draw(layer)
        self.writer.flush()

    def _draw(self, layer):
        summary = layer.group_summary()
        groups = {"bits": summary.bits, "rows": summary.rows}
        groups["count"] = summary.count
        try:
            figure = plot_groups([(layer.name, groups)])
        except ImportError as error:
            _compat.print_msg(f"MPECallback: no bits-per-group image: {error}")
        else:
            png = io.BytesIO()
            figure.savefig(png, format="png", dpi=80)
            image = tf.image.decode_png(png.getvalue(), channels=4)
            tf.summary.image(f"{layer.name}/bits_per_group", image[None])
        self.drawn.add(layer)
