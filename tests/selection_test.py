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

    def test_budget_threshold_golden(self):
        rows = [10, 10, 10, 10]
        # Averages by threshold (the distinct probabilities): 0.03 -> 3.5,
        # 0.04 -> 2.75 (4, 2, 1, 4), 0.05 and 0.1 -> 2.5, 0.15 -> 2.25
        # (the reference rule's 4, 1, 0, 4), 0.2 -> 1.75, 0.3 -> 1.25,
        # 0.5 -> 0.75, 0.6 -> 0.25, 0.7 -> 0.
        for target, threshold, bits in [
            (3.0, 0.04, [4, 2, 1, 4]),
            (2.25, 0.15, [4, 1, 0, 4]),
            (2.0, 0.2, [2, 1, 0, 4]),
            (1.5, 0.3, [1, 0, 0, 4]),
            (1.0, 0.5, [1, 0, 0, 2]),
            (0.0, 0.7, [0, 0, 0, 0]),
        ]:
            found = selection.budget_threshold(
                PROBABILITIES, CANDIDATES, rows, target
            )
            self.assertAllClose(threshold, found)
            chosen = selection.select_bits(
                PROBABILITIES, CANDIDATES, threshold=found
            )
            self.assertAllEqual(bits, chosen)

    def test_budget_threshold_meets_the_budget_closely(self):
        rng = np.random.default_rng(0)
        probabilities = rng.dirichlet(np.ones(7) * 0.3, size=128)
        rows = rng.integers(1, 1000, 128)
        candidates = (0, 1, 2, 3, 4, 5, 6)
        previous = None
        for target in (0.1, 0.3, 1.0, 2.0, 4.0):
            threshold = selection.budget_threshold(
                probabilities, candidates, rows, target
            )
            bits = selection.select_bits(
                probabilities, candidates, threshold=threshold
            )
            average = np.dot(bits, rows) / rows.sum()
            self.assertLessEqual(average, target)
            # One group's step more would break the budget: the threshold
            # just below gives more than the target.
            below = np.max(probabilities[probabilities < threshold])
            more = selection.select_bits(
                probabilities, candidates, threshold=below
            )
            self.assertGreater(np.dot(more, rows) / rows.sum(), target)
            if previous is not None:  # a larger budget never lowers bits
                self.assertTrue(np.all(bits >= previous))
            previous = bits

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "target_bits=0.5"):
            selection.budget_threshold(
                PROBABILITIES, (1, 2, 4), [1, 1, 1, 1], 0.5
            )
        with self.assertRaisesRegex(ValueError, "rule='argmax', threshold"):
            selection.select_bits(
                PROBABILITIES, CANDIDATES, "argmax", None, 0.2
            )
        with self.assertRaisesRegex(ValueError, "rule='best'"):
            selection.select_bits(PROBABILITIES, CANDIDATES, "best")
        with self.assertRaisesRegex(ValueError, r"shape \(groups, 3\)"):
            selection.select_bits(PROBABILITIES, (0, 1, 2))


if __name__ == "__main__":
    tf.test.main()
