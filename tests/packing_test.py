"""Bit packing golden values and round trips at every bit-width."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mpe import packing


class PackingTest(tf.test.TestCase):
    def test_golden_bytes(self):
        # 3 bits: 5 | 2 << 3 | 7 << 6 = 0b1_1101_0101 -> bytes 0xD5, 0x01.
        self.assertAllEqual([[0xD5, 0x01]], packing.pack_codes([[5, 2, 7]], 3))
        self.assertAllEqual([[0b1011]], packing.pack_codes([[1, 1, 0, 1]], 1))
        self.assertEqual(12, packing.bytes_per_row(6, 16))
        self.assertEqual(2, packing.bytes_per_row(1, 13))

    def test_round_trip_every_bit_width(self):
        rng = np.random.default_rng(0)
        for dim in (16, 13, 1):
            width = packing.bytes_per_row(8, dim) + 1
            for bits in range(1, 9):
                codes = rng.integers(0, 2**bits, (20, dim))
                packed = packing.pack_codes(codes, bits)
                self.assertEqual(
                    (20, packing.bytes_per_row(bits, dim)), packed.shape
                )
                padded = np.zeros((20, width), np.uint8)
                padded[:, : packed.shape[1]] = packed
                self.assertAllEqual(
                    codes, packing.unpack_codes(padded, bits, dim)
                )

    def test_rows_at_different_bit_widths(self):
        codes = np.array([[3, 0, 1, 2], [200, 17, 255, 0], [1, 0, 1, 1]])
        bits = [2, 8, 1]
        padded = np.zeros((3, packing.bytes_per_row(8, 4) + 1), np.uint8)
        for row, b in enumerate(bits):
            packed = packing.pack_codes(codes[row : row + 1], b)
            padded[row, : packed.shape[1]] = packed[0]
        self.assertAllEqual(codes, packing.unpack_codes(padded, bits, 4))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, r"in \[0, 4\) for bits=2"):
            packing.pack_codes([[4]], 2)
        with self.assertRaisesRegex(ValueError, "bits=9"):
            packing.pack_codes([[1]], 9)


@pytest.mark.parametrize("bits", [3, 5, 6])
def test_unpack_runs_in_a_graph(bits):
    codes = np.arange(16)[None, :] % (2**bits)
    padded = np.zeros((1, packing.bytes_per_row(8, 16) + 1), np.uint8)
    padded[:, : packing.bytes_per_row(bits, 16)] = packing.pack_codes(
        codes, bits
    )
    unpack = tf.function(lambda p: packing.unpack_codes(p, bits, 16))
    np.testing.assert_array_equal(codes, unpack(tf.constant(padded)))
