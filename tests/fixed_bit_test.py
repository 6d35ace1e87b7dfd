"""FixedBitEmbedding: bit-exact conversion, compact layout, save/load."""

import os

import numpy as np
import tensorflow as tf

import keras_mpe
from keras_mpe import _compat
from keras_mpe.fixed_bit import FixedBitEmbedding

keras = _compat.keras
BITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 3]  # group 0 (rarest) pruned


def searched_layer(permute=False):
    rng = np.random.default_rng(0)
    layer = keras_mpe.MixedPrecisionEmbedding(
        1000, 16, bit_candidates=range(9), num_groups=10
    )
    layer.set_frequencies(np.arange(1000)[::-1] * 3)  # frequency ordered
    if permute:
        layer._group_ids.assign(layer._group_ids.numpy()[rng.permutation(1000)])
    layer.set_quantizer_parameters(
        rng.uniform(0.005, 0.05, 8) * np.tile([1, -1], 4),
        rng.normal(size=16) * 0.01,
    )
    layer.fix_bits(BITS)
    return layer


class FixedBitTest(tf.test.TestCase):
    def test_bit_exact_and_compact_for_frequency_ordered_ids(self):
        layer = searched_layer()
        fixed = FixedBitEmbedding.from_searched(layer, chunk_rows=300)
        ids = np.arange(1000).reshape(50, 20)
        self.assertAllEqual(layer(ids), fixed(ids))
        self.assertAllEqual(np.zeros((100, 16)), fixed(np.arange(900, 1000)))
        # One segment per group; bytes = payload bits / 8 exactly.
        self.assertEqual(10, fixed.num_segments)
        payload_bits = sum(b * 100 * 16 for b in BITS)
        self.assertEqual(payload_bits // 8, fixed.num_bytes)

    def test_segments_for_fields_sharing_a_table(self):
        # Each field's vocabulary at its own offset, frequency ordered
        # within the field (ties included), as adapted per-field lookups
        # give: a group is one id range per field.
        rng = np.random.default_rng(1)
        counts = np.concatenate(
            [np.sort(rng.zipf(1.3, size))[::-1] for size in (500, 30, 2000)]
        )
        layer = keras_mpe.MixedPrecisionEmbedding(counts.size, 8, num_groups=16)
        layer.set_frequencies(counts)
        runs = [0, 1, 2, 4, 6, 3, 5, 6]  # bits by group, rarest first
        layer.fix_bits(np.repeat(runs, 2))
        fixed = FixedBitEmbedding.from_searched(layer)
        self.assertEqual("segments", fixed.index)
        # At most one segment per run of equal bits and field.
        self.assertBetween(fixed.num_segments, len(runs), 3 * len(runs))
        ids = np.arange(counts.size)
        self.assertAllEqual(layer(ids), fixed(ids))

    def test_static_shapes_under_xla(self):
        layer = searched_layer()
        fixed = FixedBitEmbedding.from_searched(layer)
        ids = np.arange(1000).reshape(50, 20) % 37
        lookup = tf.function(fixed, jit_compile=True)  # static: detected
        # XLA may fuse multiply-adds: equal within float rounding.
        self.assertAllClose(layer(ids), lookup(tf.constant(ids)), atol=1e-6)
        fixed.static_shapes = True  # forced, without XLA
        self.assertAllClose(layer(ids), fixed(ids), atol=1e-6)

    def test_both_indexes_exact_for_any_id_order(self):
        ids = np.arange(1000).reshape(50, 20)
        for permute in (False, True):
            layer = searched_layer(permute=permute)
            for index in ("segments", "ranks"):
                fixed = FixedBitEmbedding.from_searched(layer, index=index)
                self.assertAllEqual(layer(ids), fixed(ids))
                lookup = tf.function(fixed, jit_compile=True)
                self.assertAllClose(
                    layer(ids), lookup(tf.constant(ids)), atol=1e-6
                )
            auto = FixedBitEmbedding.from_searched(layer)
            self.assertEqual("ranks" if permute else "segments", auto.index)
            self.assertEqual(
                {b: 100 * BITS.count(b) for b in set(BITS)},
                auto.rows_per_bits(),
            )

    def test_bytes_layout_exact_for_any_id_order(self):
        ids = np.arange(1000).reshape(50, 20)
        for permute in (False, True):
            layer = searched_layer(permute=permute)
            fixed = FixedBitEmbedding.from_searched(
                layer, layout="bytes", chunk_rows=300
            )
            self.assertEqual("direct", fixed.index)
            self.assertAllEqual(layer(ids), fixed(ids))
            lookup = tf.function(fixed, jit_compile=True)
            self.assertAllClose(layer(ids), lookup(tf.constant(ids)), atol=1e-6)
            # A byte per code of the 900 kept rows and of the row the
            # pruned ids share; an int32 per id; 8 step sizes, 16 offsets.
            self.assertEqual(900 * 16, fixed.num_bytes)
            stored = sum(w.numpy().nbytes for w in fixed.weights)
            self.assertEqual(901 * 16 + 4 * 1000 + 4 * (8 + 16), stored)

    def test_bytes_layout_with_every_row_pruned(self):
        layer = keras_mpe.MixedPrecisionEmbedding(50, 4, num_groups=2)
        layer.set_frequencies(np.arange(50))
        steps, _ = layer.quantizer_parameters()
        layer.set_quantizer_parameters(steps, [0.5, -0.25, 3.0, 1e-3])
        layer.fix_bits([0, 0])
        fixed = FixedBitEmbedding.from_searched(layer, layout="bytes")
        self.assertEqual(0, fixed.num_bytes)
        self.assertAllEqual(np.zeros((3, 4)), fixed(np.array([0, 7, 49])))

    def test_bytes_layout_reads_the_direct_index_only(self):
        layer = searched_layer()
        with self.assertRaisesRegex(
            ValueError, r"layout='bytes'.*'direct'.*index='segments'"
        ):
            FixedBitEmbedding.from_searched(
                layer, layout="bytes", index="segments"
            )
        with self.assertRaisesRegex(ValueError, "index='ranks'"):
            FixedBitEmbedding(10, 2, [(3, 10)], layout="bytes", index="ranks")
        with self.assertRaisesRegex(
            ValueError, r"\('packed', 'bytes'\).*'int8'"
        ):
            FixedBitEmbedding.from_searched(layer, layout="int8")

    def test_rank_index_costs_about_log2_classes_bits_per_row(self):
        rows, classes = 100_000, 7  # bits 0..6: 3 bits of class per row
        layer = keras_mpe.MixedPrecisionEmbedding(rows, 16, num_groups=classes)
        counts = np.random.default_rng(2).permutation(rows)
        layer.set_frequencies(counts)
        layer.fix_bits(np.arange(classes))
        fixed = FixedBitEmbedding.from_searched(layer)
        self.assertEqual("ranks", fixed.index)
        stored = sum(w.numpy().nbytes for w in fixed.weights)
        # Everything but the codes, 8 step sizes and the 16 offsets.
        index_bytes = stored - fixed.num_bytes - 4 * (8 + 16)
        # ceil(log2 7) = 3 bits per row, plus 7 int32 counts per 2048 rows
        # (0.11 bits per row) and the 2048-row padding of the last block.
        self.assertLessEqual(index_bytes * 8 / rows, 3 + 0.11 + 0.05)
        ids = np.random.default_rng(3).integers(0, rows, (64, 26))
        self.assertAllEqual(layer(ids), fixed(ids))

    def test_ids_out_of_range_fail(self):
        fixed = FixedBitEmbedding.from_searched(searched_layer())
        lookup = tf.function(fixed)
        for bad in ([[1000]], [[-1, 3]], [[2**32]], [[2**32 + 5]]):
            for call in (fixed, lookup):
                with self.assertRaisesRegex(
                    tf.errors.InvalidArgumentError,
                    r"FixedBitEmbedding .*: .*\[0, input_dim=1000\)",
                ):
                    call(tf.constant(bad, tf.int64))

    def test_bad_index(self):
        with self.assertRaisesRegex(ValueError, "index='rank'"):
            FixedBitEmbedding.from_searched(searched_layer(), index="rank")
        with self.assertRaisesRegex(ValueError, "index='x'"):
            FixedBitEmbedding(10, 2, [(0, 10)], index="x")
        for class_rows in (
            [(1, 4), (1, 6)],
            [(9, 10)],
            [(2, 5)],
            [(3, 0), (2, 10)],
        ):
            with self.assertRaisesRegex(ValueError, "`class_rows` must be"):
                FixedBitEmbedding(10, 2, class_rows)

    def test_only_fixed_layers_convert(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        with self.assertRaisesRegex(ValueError, "phase FLOAT"):
            FixedBitEmbedding.from_searched(layer)

    def test_save_and_load(self):
        for index, layout in (
            ("segments", "packed"),
            ("ranks", "packed"),
            ("direct", "bytes"),
        ):
            self._save_and_load(index, layout)

    def _save_and_load(self, index, layout):
        fixed = FixedBitEmbedding.from_searched(
            searched_layer(), index=index, layout=layout
        )
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, fixed(inputs))
        name = "model.keras" if _compat.IS_KERAS_3 else "model.h5"
        path = os.path.join(self.get_temp_dir(), layout + index + name)
        model.save(path)
        loaded = keras.models.load_model(path)
        ids = np.array([[0, 500, 999], [1, 2, 3]], np.int32)
        self.assertAllEqual(
            model.predict(ids, verbose=0), loaded.predict(ids, verbose=0)
        )
        config = fixed.get_config()
        self.assertEqual(
            config, FixedBitEmbedding.from_config(config).get_config()
        )


if __name__ == "__main__":
    tf.test.main()
