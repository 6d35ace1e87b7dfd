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
        for dim in (16, 13, 7, 1):
            for bits in range(1, 9):
                codes = rng.integers(0, 2**bits, (20, dim))
                packed = packing.pack_codes(codes, bits)
                self.assertEqual(
                    (20, packing.bytes_per_row(bits, dim)), packed.shape
                )
                self.assertAllEqual(
                    codes, packing.unpack_rows(packed, bits, dim)
                )

    def test_unpack_golden(self):
        # 3 bits: bytes 0xD5, 0x01 hold 5 | 2 << 3 | 7 << 6.
        self.assertAllEqual(
            [[5, 2, 7]], packing.unpack_rows([[0xD5, 0x01]], 3, 3)
        )

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, r"in \[0, 4\) for bits=2"):
            packing.pack_codes([[4]], 2)
        with self.assertRaisesRegex(ValueError, "bits=9"):
            packing.pack_codes([[1]], 9)


@pytest.mark.parametrize("bits", [3, 5, 6])
def test_unpack_runs_in_a_graph(bits):
    codes = np.arange(16)[None, :] % (2**bits)
    packed = packing.pack_codes(codes, bits)
    unpack = tf.function(lambda p: packing.unpack_rows(p, bits, 16))
    np.testing.assert_array_equal(codes, unpack(tf.constant(packed)))
