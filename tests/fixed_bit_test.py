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
    layer._offset.assign(rng.normal(size=16).astype(np.float32) * 0.01)
    layer._step_sizes.assign(
        rng.uniform(0.005, 0.05, 8).astype(np.float32) * np.tile([1, -1], 4)
    )
    layer.set_bits(BITS)
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

    def test_static_shapes_under_xla(self):
        layer = searched_layer()
        fixed = FixedBitEmbedding.from_searched(layer)
        fixed.static_shapes = True
        ids = np.arange(1000).reshape(50, 20) % 37
        lookup = tf.function(fixed, jit_compile=True)
        # XLA may fuse multiply-adds: equal within float rounding.
        self.assertAllClose(layer(ids), lookup(tf.constant(ids)), atol=1e-6)

    def test_any_id_order_still_exact(self):
        layer = searched_layer(permute=True)
        fixed = FixedBitEmbedding.from_searched(layer)
        ids = np.arange(1000)
        self.assertAllEqual(layer(ids), fixed(ids))
        self.assertGreater(fixed.num_segments, 100)

    def test_only_fixed_layers_convert(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        with self.assertRaisesRegex(ValueError, "phase FLOAT"):
            FixedBitEmbedding.from_searched(layer)

    def test_save_and_load(self):
        fixed = FixedBitEmbedding.from_searched(searched_layer())
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, fixed(inputs))
        name = "model.keras" if _compat.IS_KERAS_3 else "model.h5"
        path = os.path.join(self.get_temp_dir(), name)
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
