"""Summaries over seeds: mean +- std per method, the paired difference to
fp32, and the markdown table of `results.md` (and of RESULTS.md)."""

import numpy as np


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
        entry["vs_fp32"] = paired_difference(runs, baseline, metrics[0])
        summary.append(entry)
    return summary


def paired_difference(runs, baseline, metric):
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
    """The summary as a markdown table under `header`."""
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
