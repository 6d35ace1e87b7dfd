"""Rules that turn each group's bit-width distribution into one bit-width.

- "threshold" (the reference rule, default): the largest candidate whose
  probability is at least 1 / (2K), K being the number of candidates. It
  keeps a higher precision while that precision still holds a share of the
  probability; a group is pruned only when every candidate above 0 bits is
  below the threshold.
- "argmax": the most probable candidate.
- "sample": one draw from each group's distribution (seeded).
"""

import numpy as np

SELECTION_RULES = ("threshold", "argmax", "sample")


def select_bits(probabilities, bit_candidates, rule="threshold", seed=None):
    """Chooses one bit-width per group.

    Example:

    >>> select_bits([[0.05, 0.9, 0.05], [0.5, 0.5, 0.0]], (0, 2, 4))
    array([2, 2], dtype=int32)

    Args:
        probabilities: Float array `(groups, K)`. Each row sums to 1.
        bit_candidates: Sequence of K integers, ascending.
        rule: String. One of "threshold", "argmax", "sample".
        seed: Integer or None. Seed of the "sample" rule.

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
    if rule == "threshold":
        keep = probabilities >= 1.0 / (2 * candidates.size)
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
