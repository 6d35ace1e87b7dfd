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

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "rule='best'"):
            selection.select_bits(PROBABILITIES, CANDIDATES, "best")
        with self.assertRaisesRegex(ValueError, r"shape \(groups, 3\)"):
            selection.select_bits(PROBABILITIES, (0, 1, 2))


if __name__ == "__main__":
    tf.test.main()
