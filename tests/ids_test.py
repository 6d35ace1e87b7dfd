"""Multi-hot, ragged and sparse ids, padding, and out-of-range ids."""

import os

import numpy as np
import serving
import tensorflow as tf
import testing_utils

import keras_mpe
from keras_mpe import _compat
from keras_mpe import frequency

keras = _compat.keras
TABLE = np.arange(16, dtype=np.float32).reshape(8, 2) + 1.0  # row i: 2i+1..
RAGGED = [[1, 2], [3], []]
PADDED = np.array([[1, 2, 0], [3, 0, 0], [0, 0, 0]], np.int32)


def float_layer(**kwargs):
    """A FLOAT-phase layer (a plain embedding) holding TABLE."""
    layer = keras_mpe.MixedPrecisionEmbedding(8, 2, num_groups=2, **kwargs)
    layer.embeddings.assign(TABLE)
    return layer


def forms():
    """The same ids, padded with 0, ragged and sparse."""
    ragged = tf.ragged.constant(RAGGED, tf.int32)
    return {
        "dense": PADDED,
        "ragged": ragged,
        "sparse": ragged.to_sparse(),
    }


class CombinerTest(tf.test.TestCase):
    def test_golden_pools(self):
        r = TABLE
        expected = {
            "sum": [r[1] + r[2], r[3], [0, 0]],
            "mean": [(r[1] + r[2]) / 2, r[3], [0, 0]],
            "sqrtn": [(r[1] + r[2]) / np.sqrt(2), r[3], [0, 0]],
        }
        for combiner, pooled in expected.items():
            layer = float_layer(combiner=combiner, mask_zero=True)
            for name, ids in forms().items():
                self.assertAllClose(pooled, layer(ids), msg=name)
        # Without padding, id 0 is an id like any other.
        plain = float_layer(combiner="sum")
        self.assertAllClose(
            [r[1] + r[2] + r[0], r[3] + 2 * r[0], 3 * r[0]], plain(PADDED)
        )

    def test_without_combiner(self):
        layer = float_layer(mask_zero=True)
        outputs = layer(tf.ragged.constant(RAGGED, tf.int32))
        self.assertIsInstance(outputs, tf.RaggedTensor)
        self.assertEqual(
            [[TABLE[1].tolist(), TABLE[2].tolist()], [TABLE[3].tolist()], []],
            outputs.to_list(),
        )
        dense = layer(PADDED)
        self.assertEqual((3, 3, 2), dense.shape)
        self.assertAllEqual(np.zeros((2, 2)), dense[1, 1:])  # padding
        self.assertAllEqual(PADDED != 0, layer.compute_mask(PADDED))
        self.assertEqual((3, 2), float_layer(combiner="sum")(PADDED).shape)
        self.assertEqual(
            (None, 2),
            float_layer(combiner="mean").compute_output_shape((None, 3)),
        )

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "combiner='max'"):
            float_layer(combiner="max")
        with self.assertRaisesRegex(ValueError, "need a `combiner`"):
            float_layer()(forms()["sparse"])
        with self.assertRaisesRegex(ValueError, "must have a last axis"):
            float_layer(combiner="sum")(np.array([1, 2]))
        with self.assertRaisesRegex(
            tf.errors.InvalidArgumentError, r"\[0, input_dim=8\)"
        ):
            float_layer(combiner="sum")(tf.ragged.constant([[1, 8]]))

    def test_serving_form_pools_the_same(self):
        layer = keras_mpe.MixedPrecisionEmbedding(
            8, 2, num_groups=2, combiner="mean", mask_zero=True
        )
        layer.set_frequencies(np.arange(8)[::-1])
        layer.fix_bits([1, 4])
        fixed = keras_mpe.FixedBitEmbedding.from_searched(layer)
        self.assertEqual(("mean", True), (fixed.combiner, fixed.mask_zero))
        for name, ids in forms().items():
            self.assertAllEqual(layer(ids), fixed(ids), msg=name)
        config = fixed.get_config()
        self.assertEqual("mean", config["combiner"])
        self.assertTrue(type(fixed).from_config(config).mask_zero)


class PaddingCountTest(tf.test.TestCase):
    def test_padding_is_not_counted(self):
        layer = keras_mpe.MixedPrecisionEmbedding(
            8, 2, num_groups=2, combiner="sum", mask_zero=True
        )
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, layer(inputs))
        data = tf.data.Dataset.from_tensor_slices(PADDED).batch(2)
        (counts,) = frequency.count_ids(model, [layer], data)
        self.assertAllEqual([0, 1, 1, 1, 0, 0, 0, 0], counts)


class RaggedModelTest(tf.test.TestCase):
    """A model fed ragged ids: search, convert, and serve through the
    ragged input's component tensors (values, row splits)."""

    def test_fit_convert_export(self):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        lengths = rng.integers(0, 5, 512)
        values = np.minimum(rng.zipf(1.3, lengths.sum()), 199).astype(np.int32)
        ids = tf.RaggedTensor.from_row_lengths(values, lengths)
        labels = (lengths % 2).astype(np.float32)
        data = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(64)
        layer = keras_mpe.MixedPrecisionEmbedding(
            200, 4, num_groups=4, combiner="mean"
        )
        inputs = keras.Input((None,), dtype="int32", ragged=True, name="ids")
        hidden = keras.layers.Dense(8, activation="relu")(layer(inputs))
        outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
        model = testing_utils.compile_ctr(keras.Model(inputs, outputs))
        callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        model.fit(data, epochs=3, verbose=0, callbacks=[callback])
        self.assertEqual(keras_mpe.Phase.FIXED, layer.phase)
        batch = ids[:16]
        expected = model(batch)
        served = keras_mpe.convert(model)
        self.assertAllEqual(expected, served(batch))
        path = os.path.join(self.get_temp_dir(), "ragged", "1")
        keras_mpe.export_saved_model(served, path)
        feeds = {
            "ids_values": batch.flat_values.numpy(),
            "ids_row_splits": batch.row_splits.numpy(),
        }
        loaded = tf.saved_model.load(path).signatures["serving_default"]
        outputs = loaded(**{k: tf.constant(v) for k, v in feeds.items()})
        testing_utils.assert_same_predictions(expected, outputs["outputs"])
        by_cpp = serving.predict_with_cpp_loader(
            path, feeds, self.get_temp_dir()
        )
        testing_utils.assert_same_predictions(expected, by_cpp)

    def test_sparse_input_served_by_components(self):
        layer = keras_mpe.MixedPrecisionEmbedding(
            8, 2, num_groups=2, combiner="sum", mask_zero=True
        )
        layer.set_frequencies(np.arange(8)[::-1])
        layer.fix_bits([2, 5])
        inputs = keras.Input((None,), dtype="int64", sparse=True, name="ids")
        model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
        sparse = tf.cast(forms()["sparse"], tf.int64)
        expected = model(sparse)
        path = os.path.join(self.get_temp_dir(), "sparse", "1")
        keras_mpe.export_saved_model(keras_mpe.convert(model), path)
        loaded = tf.saved_model.load(path).signatures["serving_default"]
        outputs = loaded(
            ids_indices=sparse.indices,
            ids_values=sparse.values,
            ids_dense_shape=sparse.dense_shape,
        )
        testing_utils.assert_same_predictions(expected, outputs["outputs"])


if __name__ == "__main__":
    tf.test.main()
