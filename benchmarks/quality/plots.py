"""The two plots of a results folder (matplotlib, the `plots` extra).

`<metric>_vs_compression.png`: the test metric (mean +- std over seeds)
against payload compression, one point per method. `bits_per_group.png`:
the bits each MPE run chose per frequency group against the group's mean
lookups per row, first seed.
"""

import numpy as np


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
