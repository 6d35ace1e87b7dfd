"""The command line the examples share (absl flags, dashed names).

The examples import this module when they run as scripts (their folder is
then first on `sys.path`); importing an example as a module defines no
flag, so tests can import several of them.
"""

import os
import tempfile
import types

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS


def define_export_dir(name: str):
    flags.DEFINE_string(
        "export-dir",
        os.path.join(tempfile.gettempdir(), "keras_mpe", name, "1"),
        "SavedModel version folder for TF Serving (replaced if it exists).",
    )
    flags.DEFINE_enum(
        "layout",
        "packed",
        ["packed", "bytes"],
        "How the served tables hold their codes: packed at each row's "
        "bit-width (the smallest) or a byte per code (faster to serve).",
    )


def define_synthetic_data(rows: int):
    flags.DEFINE_integer(
        "rows",
        rows,
        "Synthetic training rows (validation and test: rows / 8 each).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "max-cardinality",
        20_000,
        "Synthetic data: largest vocabulary of one categorical field.",
        lower_bound=1,
    )


def define_training(
    *,
    epochs: int,
    epochs_help: str,
    search_epochs: int,
    batch_size: int,
    dim: int,
    num_groups: int,
    learning_rate: float,
    batch_help: str = "Examples per batch.",
):
    """The training and search settings, with each example's defaults;
    the search's expert knobs (`--bit-penalty`, `--temperature`) default
    to the layer's."""
    flags.DEFINE_integer("epochs", epochs, epochs_help, lower_bound=1)
    flags.DEFINE_integer(
        "search-epochs",
        search_epochs,
        "MPE epochs before the bits are chosen (float warm-up included).",
        lower_bound=1,
    )
    flags.DEFINE_integer("batch-size", batch_size, batch_help, lower_bound=1)
    flags.DEFINE_integer(
        "dim", dim, "Embedding dimension of every table.", lower_bound=1
    )
    flags.DEFINE_integer(
        "num-groups",
        num_groups,
        "Frequency groups per MPE table; each group learns its bits.",
        lower_bound=1,
    )
    flags.DEFINE_float(
        "bit-penalty",
        None,
        "Expert: weight of the bit penalty (each group's expected bits) in "
        "the search loss; larger pushes the search to fewer bits. Unset: "
        "the layer's default.",
    )
    flags.DEFINE_float(
        "temperature",
        None,
        "Expert: softmax temperature of the precision logits. Unset: set "
        "from the search's length (learning rate * search steps / 64).",
    )
    flags.DEFINE_float("learning-rate", learning_rate, "Adam learning rate.")
    flags.DEFINE_integer(
        "seed", 0, "Seed of the data and of the weight initialisation."
    )


def search_knobs(args) -> dict:
    """The MixedPrecisionEmbedding arguments the flags set (those unset
    keep the layer's defaults)."""
    knobs = {"bit_penalty": args.bit_penalty, "temperature": args.temperature}
    return {name: value for name, value in knobs.items() if value is not None}


def define_size(metric: str, drop: float):
    """`--max-metric-drop` (what the compression may cost on the
    validation `metric`) and `--target-bits` (a size instead)."""
    flags.DEFINE_float(
        "max-metric-drop",
        drop,
        f"The validation {metric} the bit penalty's size may cost, measured "
        "before retraining against the largest size: a larger size is "
        "chosen when it costs more. Ignored when --target-bits is given.",
        lower_bound=0.0,
    )
    flags.DEFINE_float(
        "target-bits",
        None,
        "A size budget in average bits per element (32 / compression, e.g. "
        "0.32 for 100x) instead of --max-metric-drop.",
    )


def size_options(args, validation_data) -> dict:
    """MPECallback's size arguments from `define_size`'s flags."""
    if args.target_bits is not None:
        return {"target_bits": args.target_bits}
    return {
        "max_metric_drop": args.max_metric_drop,
        "validation_data": validation_data,
    }


def run(main):
    """`absl.app.run`, with `main` given the flags as attributes
    (`--batch-size` is `args.batch_size`) and TF's INFO logs off unless
    `--verbosity` asks for them."""

    def start(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        values = FLAGS.flag_values_dict().items()
        main(
            types.SimpleNamespace(**{k.replace("-", "_"): v for k, v in values})
        )

    app.run(start)
