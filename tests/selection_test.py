"""The precision selection rules."""

import numpy as np
import tensorflow as tf

from keras_mpe import selection

CANDIDATES = (0, 1, 2, 4)  # K = 4, threshold 1 / 8 = 0.125
PROBABILITIES = [
    [0.05, 0.60, 0.20, 0.15],  # 4 bits still holds 0.15 >= 0.125
    [0.70, 0.20, 0.10, 0.00],  # 1 bit is the largest above the threshold
    [0.90, 0.04, 0.03, 0.03],  # nothing above 0 bits passes: pruned
    [0.10, 0.10, 0.50, 0.30],
]


class SelectionTest(tf.test.TestCase):
    def test_threshold_rule(self):
        self.assertAllEqual(
            [4, 1, 0, 4], selection.select_bits(PROBABILITIES, CANDIDATES)
        )

    def test_threshold_rule_keeps_a_candidate_at_exactly_the_threshold(self):
        # K = 4: the threshold is 1 / 8 = 0.125, and "at least" keeps a
        # candidate holding exactly that (2 bits), not the one below it.
        self.assertAllEqual(
            [2],
            selection.select_bits([[0.625, 0.25, 0.125, 0.0]], (0, 1, 2, 3)),
        )

    def test_argmax_rule(self):
        self.assertAllEqual(
            [1, 0, 0, 2],
            selection.select_bits(PROBABILITIES, CANDIDATES, "argmax"),
        )

    def test_sample_rule_is_seeded_and_follows_the_distribution(self):
        first = selection.select_bits(PROBABILITIES, CANDIDATES, "sample", 3)
        again = selection.select_bits(PROBABILITIES, CANDIDATES, "sample", 3)
        self.assertAllEqual(first, again)
        one_hot = np.eye(4)[[3, 0, 2, 1]]
        self.assertAllEqual(
            [4, 0, 2, 1],
            selection.select_bits(one_hot, CANDIDATES, "sample", 0),
        )
        many = np.tile([[0.25, 0.25, 0.5, 0.0]], (4000, 1))
        drawn = selection.select_bits(many, CANDIDATES, "sample", 0)
        self.assertAllClose(0.5, np.mean(drawn == 2), atol=0.03)
        self.assertEqual(0, np.sum(drawn == 4))

    def test_tail_bits_golden(self):
        # P(bits >= b) for b = 0, 1, 2, 4: group 0 1, 0.95, 0.35, 0.15;
        # group 1 1, 0.3, 0.1, 0; group 2 1, 0.1, 0.06, 0.03; group 3 1,
        # 0.9, 0.8, 0.3.
        for level, bits in [
            (0.0, [4, 4, 4, 4]),
            (0.06, [4, 2, 2, 4]),
            (0.3, [2, 1, 0, 4]),
            (0.5, [1, 0, 0, 2]),
            (0.95, [1, 0, 0, 0]),
            (1.0, [0, 0, 0, 0]),
        ]:
            self.assertAllEqual(
                bits, selection.tail_bits(PROBABILITIES, CANDIDATES, level)
            )
        # A group unsure between the top candidates keeps a high one.
        self.assertAllEqual(
            [5], selection.tail_bits([[0.1, 0.3, 0.3, 0.3]], (0, 4, 5, 6), 0.5)
        )

    def test_budget_bits_golden(self):
        rows = [10, 10, 10, 10]  # budget: target x 40 bits
        # Steps, most probable first (group, candidate: P(bits >= it)):
        # (0, 1: 0.95) raises every group to 1 bit (no group below a rarer
        # one): 40; (3, 2: 0.8) -> [1, 1, 1, 2]: 50; (0, 2: 0.35) -> all 2:
        # 80; (3, 4: 0.3) -> [2, 2, 2, 4]: 100; (0, 4: 0.15) -> all 4: 160;
        # then (1, 2: 0.1), (2, 2: 0.06), (2, 4: 0.03), (1, 4: 0).
        for target, bits in [
            (4.0, [4, 4, 4, 4]),
            # 160 does not fit; (2, 4) raises groups 2-3 to 4 bits: 120.
            (3.0, [2, 2, 4, 4]),
            (2.2, [2, 2, 2, 2]),
            # 80 does not fit, nor 70 for (3, 4); (2, 2) does: 60.
            (1.5, [1, 1, 2, 2]),
            (1.0, [1, 1, 1, 1]),
            # 40 does not fit; (3, 1) and (3, 2) do: 20.
            (0.5, [0, 0, 0, 2]),
            (0.2, [0, 0, 0, 0]),
        ]:
            self.assertAllEqual(
                bits,
                selection.budget_bits(PROBABILITIES, CANDIDATES, rows, target),
            )

    def test_budget_bits_fills_the_budget(self):
        rng = np.random.default_rng(0)
        probabilities = rng.dirichlet(np.ones(7) * 0.3, size=128)
        rows = rng.integers(1, 1000, 128)
        candidates = np.arange(7)
        tails = np.cumsum(probabilities[:, ::-1], axis=1)[:, ::-1]
        for target in (0.1, 0.3, 1.0, 2.0, 4.0):
            bits = selection.budget_bits(
                probabilities, candidates, rows, target
            )
            room = target * rows.sum() - np.dot(bits, rows)
            self.assertGreaterEqual(room, 0)
            self.assertTrue(np.all(np.diff(bits) >= 0))
            # At least the lowest single level that fits (tail_bits with
            # the running maximum) gives, group by group.
            for level in np.unique(tails):
                one_level = np.maximum.accumulate(
                    selection.tail_bits(probabilities, candidates, level)
                )
                if np.dot(one_level, rows) <= target * rows.sum():
                    self.assertTrue(np.all(bits >= one_level))
                    break
            # Full: no group can take one more candidate (with the more
            # frequent groups raised to match) within the budget.
            for group in range(128):
                if bits[group] < 6:
                    raised = bits.copy()
                    raised[group:] = np.maximum(raised[group:], bits[group] + 1)
                    self.assertGreater(np.dot(raised - bits, rows), room)

    def test_distance_from_uniform_golden(self):
        uniform, sure = [0.25] * 4, [0.0, 0.0, 1.0, 0.0]
        self.assertAllClose(0.0, selection.distance_from_uniform([uniform]))
        self.assertAllClose(1.0, selection.distance_from_uniform([sure]))
        # TV of [0.5, 0.5, 0, 0] is 0.5, over its maximum 0.75.
        half = [0.5, 0.5, 0.0, 0.0]
        self.assertAllClose(
            (0 + 2 / 3) / 2, selection.distance_from_uniform([uniform, half])
        )

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "target_bits=0.5"):
            selection.budget_bits(PROBABILITIES, (1, 2, 4, 8), [1] * 4, 0.5)
        for bad in ("1", True, float("nan")):
            with self.assertRaisesRegex(ValueError, "target_bits="):
                selection.budget_bits(PROBABILITIES, CANDIDATES, [1] * 4, bad)
        with self.assertRaisesRegex(ValueError, "rule='best'"):
            selection.select_bits(PROBABILITIES, CANDIDATES, "best")
        with self.assertRaisesRegex(ValueError, r"shape \(groups, 3\)"):
            selection.select_bits(PROBABILITIES, (0, 1, 2))


if __name__ == "__main__":
    tf.test.main()
