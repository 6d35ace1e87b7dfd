"""Golden values for the LSQ+ fake quantizer and its custom gradients."""

import numpy as np
import tensorflow as tf

from keras_mpe import quantizer

VALUES = [-0.35, 0.05, 0.25, 1.2]
# With step 0.2, offset 0.1 and 2 bits (codes -2..1):
# u = (e - 0.1) / 0.2 = [-2.25, -0.25, 0.75, 5.5]
# codes = clip(round(u)) = [-2, 0, 1, 1] -> Q = [-0.3, 0.1, 0.3, 0.3]


def _run(upstream, grad_scale=0.5):
    values = tf.constant(VALUES)
    step = tf.Variable(0.2)
    offset = tf.Variable(0.1)
    with tf.GradientTape() as tape:
        tape.watch(values)
        output = quantizer.fake_quantize(
            values, step, offset, lo=-2.0, hi=1.0, grad_scale=grad_scale
        )
        loss = tf.reduce_sum(output * upstream)
    grads = tape.gradient(loss, [values, step, offset])
    return output, grads


class QuantizerTest(tf.test.TestCase):
    def test_forward_golden(self):
        output, _ = _run(tf.ones(4))
        self.assertAllClose([-0.3, 0.1, 0.3, 0.3], output, atol=1e-7)

    def test_gradients_golden(self):
        # below = [1,0,0,0], above = [0,0,0,1], inside = [0,1,1,0]
        # d_step = s * sum(dy * [-2, round(-.25) + .25, round(.75) - .75, 1])
        #        = 0.5 * (1*-2 + 2*0.25 + 3*0.25 + 4*1) = 1.625
        # d_offset = s * sum(dy * [1, 0, 0, 1]) = 0.5 * (1 + 4) = 2.5
        _, (d_values, d_step, d_offset) = _run(tf.constant([1.0, 2, 3, 4]))
        self.assertAllClose([0.0, 2.0, 3.0, 0.0], d_values)
        self.assertAllClose(1.625, d_step)
        self.assertAllClose(2.5, d_offset)

    def test_negative_step_uses_its_magnitude(self):
        values = tf.constant(VALUES)
        step = tf.Variable(-0.2)
        with tf.GradientTape() as tape:
            output = quantizer.fake_quantize(values, step, 0.1, -2.0, 1.0, 0.5)
            loss = tf.reduce_sum(output)
        self.assertAllClose([-0.3, 0.1, 0.3, 0.3], output, atol=1e-7)
        # The sign of the step flips the sign of its gradient.
        self.assertAllClose(0.25, tape.gradient(loss, step))

    def test_broadcast_over_bit_widths(self):
        rng = np.random.default_rng(0)
        rows = rng.normal(size=(5, 3)).astype(np.float32)
        bits = [1, 3, 6]
        steps = np.array([0.7, 0.3, 0.05], np.float32)
        ranges = [quantizer.integer_range(b) for b in bits]
        output = quantizer.fake_quantize(
            tf.constant(rows)[:, None, :],
            tf.constant(steps)[:, None],
            tf.constant([0.1, -0.2, 0.0]),
            lo=tf.constant([[lo] for lo, _ in ranges], tf.float32),
            hi=tf.constant([[hi] for _, hi in ranges], tf.float32),
            grad_scale=tf.ones((3, 1)),
        )
        self.assertEqual((5, 3, 3), output.shape)
        for k, (lo, hi) in enumerate(ranges):
            u = (rows - np.array([0.1, -0.2, 0.0])) / (steps[k] + 1e-10)
            expected = np.clip(np.round(u), lo, hi) * steps[k]
            expected += np.array([0.1, -0.2, 0.0])
            self.assertAllClose(expected, output[:, k, :], atol=1e-6)

    def test_helpers(self):
        self.assertEqual((-1, 0), quantizer.integer_range(1))
        self.assertEqual((-32, 31), quantizer.integer_range(6))
        self.assertAllClose(
            1 / np.sqrt(4 * 100 * 16), quantizer.gradient_scale(3, 100, 16)
        )
        self.assertAllClose(2 * 0.5 / 2, quantizer.initial_step_size(0.5, 3))
        with self.assertRaisesRegex(ValueError, "bits=0"):
            quantizer.integer_range(0)


if __name__ == "__main__":
    tf.test.main()
