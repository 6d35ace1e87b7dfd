"""Storage plans, code layouts and the direct row index: golden values."""

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import row_index
from keras_mpe import storage

keras = _compat.keras


class StorageTest(tf.test.TestCase):
    def test_plan_and_one_matrix_golden(self):
        plan = storage.plan_storage([3, 0, 3, 1, 0])
        self.assertEqual((0, 1, 3), plan.class_bits)
        self.assertEqual((2, 1, 2), plan.class_sizes)
        self.assertAllEqual([0, 0, 1, 0, 1], plan.slot_of_row)
        # One matrix: row 0 for the pruned rows, then the 1-bit row, then
        # the two 3-bit rows.
        one = plan.in_one_matrix()
        self.assertAllEqual([2, 0, 3, 1, 0], one.slot_of_row)
        self.assertAllEqual(plan.class_of_row, one.class_of_row)

    def test_byte_codes_golden_and_round_trip(self):
        layout = storage.LAYOUTS["bytes"]
        self.assertEqual(
            (16, 0), (layout.row_bytes(3, 16), layout.row_bytes(0, 16))
        )
        # Unsigned 2-bit codes 0..3 are signed -2..1.
        stored = layout.store(np.array([[0, 1, 2, 3]]), bits=2)
        self.assertAllEqual([[254, 255, 0, 1]], stored)
        self.assertAllEqual([[-2.0, -1.0, 0.0, 1.0]], layout.load(stored))
        for bits in range(1, storage.MAX_BITS + 1):
            codes = np.arange(2**bits)[None, :]
            signed = layout.load(layout.store(codes, bits))
            self.assertAllEqual(codes - 2 ** (bits - 1), signed)

    def test_bad_layout(self):
        with self.assertRaisesRegex(ValueError, "layout='int4'"):
            storage.code_layout("int4")


class DirectIndexTest(tf.test.TestCase):
    def test_locate_golden(self):
        plan = storage.plan_storage([3, 0, 3, 1, 0])
        index = row_index.DirectIndex.for_plan(plan)
        self.assertEqual(4 * 5, index.num_bytes)
        holder = keras.layers.Layer()

        def add_state(name, shape, dtype):
            return holder.add_weight(
                name=name, shape=shape, dtype=dtype, initializer="zeros"
            )

        index.build(add_state)
        index.assign(plan)
        (entries,) = holder.weights
        self.assertAllEqual(
            [2, 0, 18, 1, 16], entries.numpy()
        )  # slot x 16 + class
        classes, slots = index.locate(tf.constant([4, 2, 0, 3]))
        self.assertAllEqual([0, 2, 2, 1], classes)
        self.assertAllEqual([1, 1, 0, 0], slots)

    def test_wide_entries_past_2_27_rows(self):
        self.assertEqual("int32", row_index.DirectIndex(2**27, 9).dtype)
        self.assertEqual("int64", row_index.DirectIndex(2**27 + 1, 9).dtype)
        self.assertEqual(
            8 * (2**27 + 1), row_index.DirectIndex(2**27 + 1, 9).num_bytes
        )

    def test_auto_never_picks_the_direct_index(self):
        plan = storage.plan_storage(np.arange(10) % 3)
        self.assertIn(row_index.choose_index(plan).kind, row_index.SMALLEST)
        self.assertEqual("direct", row_index.choose_index(plan, "direct").kind)


if __name__ == "__main__":
    tf.test.main()
