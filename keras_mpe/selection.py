"""Rules that turn each group's bit-width distribution into one bit-width.

- "threshold" (the reference rule, default): the largest candidate whose
  probability is at least 1 / (2K), K being the number of candidates. It
  keeps a higher precision while that precision still holds a share of the
  probability; a group is pruned only when every candidate above 0 bits is
  below the threshold.
- "argmax": the most probable candidate.
- "sample": one draw from each group's distribution (seeded).

A size budget (`budget_bits`) uses the tails of each group's
distribution instead. Lowering a level p from 1, each group gets the
largest candidate b with P(bits >= b) >= p (`tail_bits`), raised where
needed so that no group has fewer bits than a rarer one. `budget_bits`
walks that sweep one (group, candidate) step at a time, the most
probable first, and takes every step that still fits `target_bits` per
element. Measured on the KDD12 sample at 64x (10 splits), the tails and
the running maximum both matter:

- thresholding single candidates, as the reference rule does, pruned
  frequent groups unsure between 4, 5 and 6 bits (no single candidate
  above a high threshold) before rare groups sure of 1 bit: AUC
  0.54-0.58 after a search at a weak penalty (3e-4) on most splits;
- the quantile alone still pruned the two most frequent groups on one
  split (AUC 0.61): a weak penalty leaves distributions close to each
  other, and small differences decide. The frequency-weighted penalty
  makes a bit cost more in a rarer group, so a rarer group with more
  bits is search noise, and the running maximum removes it.
"""

import math
import numbers

import numpy as np

SELECTION_RULES = ("threshold", "argmax", "sample")


def check_target_bits(
    target_bits,
    bit_candidates=(0,),
    rule="threshold",
    rule_name="rule",
    table="",
):
    """Raises a ValueError unless `target_bits` is a size budget to meet.

    A budget is a finite number of bits per element from 0 to 32, at
    least the smallest of `bit_candidates`; it replaces the selection
    rule, so `rule` must be the default "threshold". None passes.

    Args:
        target_bits: The value to check.
        bit_candidates: The candidates of the table it is meant for.
        rule: The selection rule given with it.
        rule_name: The name of that rule's argument, for the message.
        table: The table's name, for the message.
    """
    if target_bits is None:
        return
    if (
        isinstance(target_bits, bool)
        or not isinstance(target_bits, numbers.Real)
        or not math.isfinite(target_bits)
        or not 0 <= target_bits <= 32
    ):
        raise ValueError(
            "`target_bits` must be a number of bits per element from 0 to "
            f"32. Received: target_bits={target_bits!r}"
        )
    candidates = tuple(int(b) for b in bit_candidates)
    if target_bits < min(candidates):
        whose = f"layer '{table}'s " if table else ""
        raise ValueError(
            f"`target_bits={target_bits!r}` is below the smallest of "
            f"{whose}bit_candidates {candidates}: the budget must be at least "
            f"{min(candidates)} bits per element."
        )
    if rule != "threshold":
        raise ValueError(
            "`target_bits` chooses the bits with its own rule; leave "
            f"`{rule_name}` at 'threshold'. Received: {rule_name}={rule!r}, "
            f"target_bits={target_bits!r}"
        )


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


def distance_from_uniform(probabilities) -> float:
    """How far the groups' distributions moved from uniform, 0 to 1.

    The total variation distance of each group's distribution from the
    uniform one over its K candidates, divided by its largest possible
    value 1 - 1/K, averaged over groups: 0 when every group is still
    uniform (the search did not move), 1 when every group is sure of one
    candidate.

    Example:

    >>> distance_from_uniform([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])
    0.5
    """
    probabilities = np.asarray(probabilities, np.float64)
    k = probabilities.shape[1]
    total_variation = 0.5 * np.abs(probabilities - 1.0 / k).sum(axis=1)
    return float(np.mean(total_variation / (1.0 - 1.0 / k)))


def _tails(probabilities):
    """P(bits >= candidate k) per group and candidate; 1 for the first."""
    probabilities = np.asarray(probabilities, np.float64)
    tails = np.cumsum(probabilities[:, ::-1], axis=1)[:, ::-1]
    tails[:, 0] = 1.0  # every group has at least the smallest candidate
    return tails


def tail_bits(probabilities, bit_candidates, level):
    """Per group, the largest candidate b with P(bits >= b) >= `level`.

    Example:

    >>> tail_bits([[0.1, 0.3, 0.3, 0.3]], (0, 4, 5, 6), 0.5)
    array([5], dtype=int32)

    Args:
        probabilities: Float array `(groups, K)`.
        bit_candidates: Sequence of K integers, ascending.
        level: Float from 0 to 1.

    Returns:
        int32 array `(groups,)`.
    """
    keep = _tails(probabilities) >= level
    last = keep.shape[1] - 1 - np.argmax(keep[:, ::-1], axis=1)
    return np.asarray(bit_candidates, np.int32)[last]


def budget_bits(probabilities, bit_candidates, group_rows, target_bits):
    """Bits per group that fill a size budget, the most probable first.

    Every pair (group g, candidate b) is an event with probability
    P_g(bits >= b). Starting from the smallest candidate everywhere, the
    events are taken from the most probable to the least; each one raises
    g, and every more frequent group below b, to b when that still fits
    the budget, and is skipped otherwise. Taking the events down to a
    level p, skipping none, is the quantile choice at p (`tail_bits`,
    raised so that no group has fewer bits than a rarer one); the skips
    let cheaper events fill what the coarse steps between levels leave.

    Example:

    >>> budget_bits([[0.8, 0.1, 0.1], [0.1, 0.3, 0.6]], (0, 2, 4),
    ...             [10, 10], 2.0)
    array([0, 4], dtype=int32)

    Args:
        probabilities: Float array `(groups, K)`, groups ordered from the
            rarest to the most frequent (as `MixedPrecisionEmbedding`
            numbers them).
        bit_candidates: Sequence of K integers, ascending.
        group_rows: `groups` integers: the rows of each group.
        target_bits: Float. The most bits per element, averaged over rows.

    Returns:
        int32 array `(groups,)`, non-decreasing, averaging at most
        `target_bits`, in which no further event fits.
    """
    check_target_bits(target_bits, bit_candidates)
    rows = np.asarray(group_rows, np.float64)
    candidates = np.asarray(bit_candidates, np.int64)
    tails = _tails(probabilities)
    groups = np.arange(tails.shape[0])
    # Most probable first; among equals, the more frequent group first.
    pairs = [(g, k) for g in groups for k in range(1, candidates.size)]
    pairs.sort(key=lambda pair: (-tails[pair], -pair[0]))
    bits = np.full(groups.size, candidates[0])
    room = target_bits * rows.sum() - np.dot(bits, rows)
    slack = 1e-9 * rows.sum()  # rounding of the float sums
    for group, k in pairs:
        wanted = np.maximum(bits, candidates[k])
        raised = np.where(groups >= group, wanted, bits)
        cost = np.dot(raised - bits, rows)
        if 0 < cost <= room + slack:
            bits, room = raised, room - cost
    return bits.astype(np.int32)
