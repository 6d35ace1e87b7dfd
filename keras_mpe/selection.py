"""Rules that turn each group's bit-width distribution into one bit-width.

- "threshold" (the reference rule, default): the largest candidate whose
  probability is at least 1 / (2K), K being the number of candidates. It
  keeps a higher precision while that precision still holds a share of the
  probability; a group is pruned only when every candidate above 0 bits is
  below the threshold.
- "argmax": the most probable candidate.
- "sample": one draw from each group's distribution (seeded).

A size budget moves the threshold instead of the bit penalty:
`budget_threshold` finds the lowest threshold whose choice averages at
most `target_bits` per element. A higher threshold never raises any
group's bits, so the average falls as the threshold rises, and the
search's ranking of the groups (which precision still holds probability)
is kept.
"""

import numpy as np

SELECTION_RULES = ("threshold", "argmax", "sample")


def select_bits(
    probabilities, bit_candidates, rule="threshold", seed=None, threshold=None
):
    """Chooses one bit-width per group.

    Example:

    >>> select_bits([[0.05, 0.9, 0.05], [0.5, 0.5, 0.0]], (0, 2, 4))
    array([2, 2], dtype=int32)

    Args:
        probabilities: Float array `(groups, K)`. Each row sums to 1.
        bit_candidates: Sequence of K integers, ascending.
        rule: String. One of "threshold", "argmax", "sample".
        seed: Integer or None. Seed of the "sample" rule.
        threshold: Float or None. The "threshold" rule's threshold; None
            for the reference's 1 / (2K).

    Returns:
        int32 array `(groups,)` of chosen bit-widths.
    """
    probabilities = np.asarray(probabilities, np.float64)
    candidates = np.asarray(bit_candidates, np.int32)
    if probabilities.ndim != 2 or probabilities.shape[1] != candidates.size:
        raise ValueError(
            "`probabilities` must have shape (groups, "
            f"{candidates.size}). Received: shape {probabilities.shape}"
        )
    if threshold is not None and rule != "threshold":
        raise ValueError(
            "`threshold` applies to the 'threshold' rule only. Received: "
            f"rule={rule!r}, threshold={threshold}"
        )
    if rule == "threshold":
        if threshold is None:
            threshold = 1.0 / (2 * candidates.size)
        keep = probabilities >= threshold
        # The last candidate that passes: argmax over the reversed mask.
        last = candidates.size - 1 - np.argmax(keep[:, ::-1], axis=1)
        index = np.where(keep.any(axis=1), last, 0)
    elif rule == "argmax":
        index = np.argmax(probabilities, axis=1)
    elif rule == "sample":
        rng = np.random.default_rng(seed)
        cumulative = np.cumsum(probabilities, axis=1)
        draws = rng.random((probabilities.shape[0], 1)) * cumulative[:, -1:]
        index = np.minimum(
            (cumulative <= draws).sum(axis=1), candidates.size - 1
        )
    else:
        raise ValueError(
            f"`rule` must be one of {SELECTION_RULES}. Received: rule={rule!r}"
        )
    return candidates[index]


def budget_threshold(probabilities, bit_candidates, group_rows, target_bits):
    """The lowest threshold whose choice fits `target_bits` per element.

    Example:

    >>> probabilities = [[0.8, 0.1, 0.1], [0.1, 0.3, 0.6]]
    >>> budget_threshold(probabilities, (0, 2, 4), [10, 10], 2.0)
    0.3
    >>> select_bits(probabilities, (0, 2, 4), threshold=0.3)
    array([0, 4], dtype=int32)

    Args:
        probabilities: Float array `(groups, K)`.
        bit_candidates: Sequence of K integers, ascending.
        group_rows: `groups` integers: the rows of each group.
        target_bits: Float. The most bits per element, averaged over rows.

    Returns:
        The threshold for `select_bits(..., threshold=...)`: the largest
        average not above `target_bits` that the rule can reach.
    """
    probabilities = np.asarray(probabilities, np.float64)
    rows = np.asarray(group_rows, np.float64)
    smallest = float(np.min(bit_candidates))
    if not np.isfinite(target_bits) or target_bits < smallest:
        raise ValueError(
            f"`target_bits` must be at least the smallest candidate, "
            f"{smallest:g} bits. Received: target_bits={target_bits}"
        )

    def average(threshold):
        bits = select_bits(probabilities, bit_candidates, threshold=threshold)
        return float(np.dot(bits, rows) / rows.sum())

    # The choice changes only at the probabilities themselves; above all of
    # them every group takes the smallest candidate.
    thresholds = np.append(np.unique(probabilities), np.inf)
    low, high = 0, thresholds.size - 1  # average(thresholds[high]) fits
    while low < high:
        middle = (low + high) // 2
        if average(thresholds[middle]) <= target_bits:
            high = middle
        else:
            low = middle + 1
    return float(thresholds[low])
