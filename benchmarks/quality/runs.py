"""Every method on one split (`run_seed`), every seed (`run`).

Each method starts from the same random seed as fp32 on the same split;
each row is printed as it is done (`one_line`) and every seed's rows are
written to `results.json` as they come, so a long run can be followed
and redrawn with `--replot`.
"""

import json
import time

import tensorflow as tf

from benchmarks.quality import methods
from benchmarks.quality import readers

keras = tf.keras


def run_seed(data, args, seed):
    """Every method of `args.methods` on one split; returns their rows.

    fp32 always runs first: the other rows' times are relative to it, and
    the heuristic (which needs an MPE run at `args.budget_penalty` for its
    budget) runs last.
    """
    rows = []

    def add(row):
        fp32 = rows[0] if rows else row
        row["seed"] = seed
        row["train_time_vs_fp32"] = row["epoch_seconds"] / fp32["epoch_seconds"]
        row["predict_time_vs_fp32"] = (
            row["predict_seconds"] / fp32["predict_seconds"]
        )
        rows.append(row)
        print(one_line(row), flush=True)

    keras.utils.set_random_seed(seed)
    fp32_model, fp32_rows = methods.run_fp32(data, args)
    for row in fp32_rows:
        add(row)
    if "post" in args.methods:
        for row in methods.post_training(
            fp32_model, data, args, rows[0]["epoch_seconds"]
        ):
            add(row)
    if "qat" in args.methods:
        for bits in args.qat_bits:
            keras.utils.set_random_seed(seed)
            add(methods.run_qat(bits, data, args))
    if "control6" in args.methods:
        keras.utils.set_random_seed(seed)
        add(methods.run_control(data, args))
    budget = None
    if "mpe" in args.methods:
        for penalty in args.penalties:
            keras.utils.set_random_seed(seed)
            row = methods.run_mpe(penalty, data, args)
            add(row)
            if penalty == args.budget_penalty:
                budget = row["average_bits"]
    if "heuristic" in args.methods and budget is not None:
        keras.utils.set_random_seed(seed)
        add(methods.run_heuristic(budget, data, args))
    return rows


def one_line(row) -> str:
    """A result row as printed while the benchmark runs."""
    metric = " ".join(
        f"{k} {row[k]:.4f}" for k in ("auc", "logloss", "rmse") if k in row
    )
    return (
        f"seed {row['seed']} {row['method']:>12}: {metric}  payload "
        f"{row['payload_compression']:.1f}x real {row['real_compression']:.1f}x"
        f"  train {row['train_time_vs_fp32']:.2f}x predict "
        f"{row['predict_time_vs_fp32']:.2f}x"
    )


def run(args, out):
    """Every seed; returns the settings and one row per method and seed.

    `out/results.json` holds `{"settings": ..., "runs": [rows]}`, rewritten
    after each seed.
    """
    settings = {k: sorted(v) if isinstance(v, set) else v
                for k, v in vars(args).items() if k != "replot"}  # fmt: skip
    settings["keras"] = "3" if methods.KERAS_3 else "2 (tf_keras)"
    started = time.time()
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        data = readers.load_data(args, seed)
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
