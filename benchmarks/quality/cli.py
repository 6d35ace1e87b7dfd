"""The quality benchmark's flags and `main`: run (or `--replot`), then the
table (`results.md`, printed) and the plots, all in `--out`."""

import argparse
import json
import pathlib
import warnings

import tensorflow as tf

import benchmarks.quality
from benchmarks.quality import methods
from benchmarks.quality import plots
from benchmarks.quality import readers
from benchmarks.quality import runs
from benchmarks.quality import summary as summaries

# What `--defaults` lets the compression cost on the validation metric.
DEFAULTS_METRIC_DROP = 0.002


def parse_args(argv=None):
    """The flags of `argv` (default: the command line), with the defaults
    that depend on `--data` filled in and the lists parsed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description=benchmarks.quality.__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--data",
        default="criteo",
        choices=["synthetic", *readers.SAMPLES],
        help="data set (default: %(default)s)",
    )
    parser.add_argument(
        "--path",
        help="file or folder instead of ../shared (default: the data "
        "set's sample in ../shared/data)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="splits, one per seed (default: %(default)s)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first..first+n-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--methods",
        default="fp32,post,qat,heuristic,control6,mpe",
        help="comma-separated subset of: fp32 (always run), post, qat, "
        "heuristic, control6, mpe (default: %(default)s)",
    )
    parser.add_argument(
        "--penalties",
        default="3e-4,1e-3,3e-3,1e-2",
        help="MPE lambdas (default: %(default)s)",
    )
    parser.add_argument(
        "--budget-penalty",
        type=float,
        default=3e-3,
        help="the heuristic gets the bits MPE chose at this penalty "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--target-bits",
        type=float,
        help="MPE runs choose their bits to this many per element "
        "(MPECallback's target_bits; the method is then named "
        "mpe@lambda/<bits>b); default: the reference threshold",
    )
    parser.add_argument(
        "--qat-bits",
        default="8,6,4,2",
        help="bit-widths of uniform QAT (default: %(default)s)",
    )
    parser.add_argument(
        "--num-groups",
        type=int,
        default=128,
        help="frequency groups of the MPE table (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        help="MixedPrecisionEmbedding temperature (default: the layer's, "
        "set from the search's length)",
    )
    parser.add_argument(
        "--max-metric-drop",
        type=float,
        help="MPE runs keep the bit penalty's size if its validation AUC "
        "(RMSE) stays within this of the largest size's, else the "
        "smallest larger size that does (MPECallback's max_metric_drop; "
        "the method is then named mpe@lambda/drop<d>); default: the "
        "selection rule alone",
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="fp32 against MPE as a user gets it (method mpe@defaults): "
        "the layer's and the callback's defaults (no temperature, bit "
        "penalty or target) with max_metric_drop "
        f"{DEFAULTS_METRIC_DROP} on the validation metric",
    )
    parser.add_argument(
        "--dim",
        type=int,
        default=16,
        help="embedding dimension (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="fp32 / retrain epochs (default: 6 on the real samples, 2 on "
        "synthetic data)",
    )
    parser.add_argument(
        "--search-epochs",
        type=int,
        default=3,
        help="MPE / control epochs before the bits are chosen "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="examples per batch (default: 250 on the real CTR samples, the "
        "reference's; 1024 on MovieLens; 4096 on synthetic data)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's (default: %(default)s)",
    )
    parser.add_argument(
        "--init-std",
        type=float,
        default=0.003,
        help="table init N(0, std^2) for every method (the reference's; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--mlp",
        help="hidden units, e.g. 1024,512,256; '' for none (default: "
        "1024,512,256 on the real CTR samples, 256,128 on MovieLens and "
        "synthetic data)",
    )
    parser.add_argument(
        "--dense-init",
        default="reference",
        choices=["reference", "glorot"],
        help="Dense layers' start: the reference's (PyTorch's nn.Linear: "
        "weights and biases uniform in +-1/sqrt(fan_in)) or Keras' "
        "(Glorot-uniform weights, zero biases) (default: %(default)s)",
    )
    parser.add_argument(
        "--no-batchnorm",
        dest="batchnorm",
        action="store_false",
        help="hidden layers without BatchNormalization (default: with)",
    )
    parser.add_argument(
        "--fixed-warmup-epochs",
        type=int,
        default=0,
        help="QAT / heuristic: float epochs before quantizing (LSQ step "
        "sizes then come from the trained table); 0 quantizes from the "
        "first step, as uniform QAT is trained (default: %(default)s)",
    )
    parser.add_argument(
        "--no-rewind",
        dest="rewind",
        action="store_false",
        help="MPE / control: retrain from the searched table instead of "
        "rewinding it to its initial values (MPECallback's "
        "rewind_embeddings=False; default: rewind)",
    )
    parser.add_argument(
        "--no-rewind-network",
        dest="rewind_network",
        action="store_false",
        help="MPE / control: retrain the dense network from the last search "
        "epoch instead of from the search's start (MPECallback's "
        "rewind_network=False, the reference's way; default: rewind)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=2_000_000,
        help="synthetic training rows; validation and test get a tenth "
        "each (default: %(default)s)",
    )
    parser.add_argument(
        "--max-cardinality",
        type=int,
        default=200_000,
        help="synthetic per-field vocabulary cap (default: %(default)s)",
    )
    parser.add_argument(
        "--out", help="results folder (default: benchmarks/results/<data>)"
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redo the table and plots from --out/results.json (default: "
        "run the methods)",
    )
    args = parser.parse_args(argv)
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
        "out": f"benchmarks/results/{args.data}",
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.mlp = [int(u) for u in args.mlp.split(",") if u]
    args.methods = set(args.methods.split(","))
    args.penalties = [float(p) for p in args.penalties.split(",")]
    if args.defaults:
        given = [
            flag
            for flag, value in (
                ("--temperature", args.temperature),
                ("--target-bits", args.target_bits),
                ("--max-metric-drop", args.max_metric_drop),
            )
            if value is not None
        ]
        if given:
            parser.error(f"--defaults sets its own {', '.join(given)}")
        args.methods = {"fp32", "mpe"}
        args.penalties = [methods.DEFAULT_PENALTY]
        args.max_metric_drop = DEFAULTS_METRIC_DROP
    args.qat_bits = [int(b) for b in args.qat_bits.split(",")]
    return args


def main(argv=None):
    """Runs the benchmark (or reads `--out/results.json` with `--replot`),
    prints and writes the table, draws the plots."""
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    tf.get_logger().setLevel("ERROR")
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = ["rmse"] if args.data == "movielens" else ["auc", "logloss"]
    if args.replot:
        saved = json.loads((out / "results.json").read_text())
        settings, rows = saved["settings"], saved["runs"]
    else:
        settings, rows = runs.run(args, out)
    summary = summaries.summarize(rows, metrics)
    seeds = len({row["seed"] for row in rows})
    header = (
        f"### {settings['data']}: {seeds} seeds, Keras "
        f"{settings['keras']}, {settings['minutes']:.0f} min\n\n"
        f"Settings: `{json.dumps(settings)}`"
    )
    table = summaries.markdown(summary, metrics, header)
    print("\n" + table)
    (out / "results.md").write_text(table)
    plots.plot(summary, rows, metrics[0], out)
    print(f"written to {out}/")
