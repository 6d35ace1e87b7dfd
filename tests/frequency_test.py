"""Frequency grouping (golden values) and counting through a model."""

import contextlib
import io

import numpy as np
import tensorflow as tf

import keras_mpe
from keras_mpe import _compat
from keras_mpe import frequency

keras = _compat.keras


class GroupingTest(tf.test.TestCase):
    def test_golden_groups_and_weights(self):
        # Ascending by count, ties by the higher id first: ids 1(0) 3(1)
        # 5(3) | 4(3) 0(5) 6(7) | 2(9), chunks of ceil(7 / 3) = 3 rows.
        groups = frequency.group_by_frequency([5, 0, 9, 1, 3, 3, 7], 3)
        self.assertAllEqual([1, 0, 2, 0, 1, 0, 1], groups.group_ids)
        self.assertAllEqual([4, 15, 9], groups.group_counts)
        self.assertAllEqual([3, 3, 1], groups.group_sizes)
        self.assertAllClose([1.0, 3.75, 2.25], groups.group_weights)

    def test_frequency_ordered_ids_give_contiguous_groups(self):
        counts = np.array([9, 7, 7, 7, 7, 3, 3, 1, 0, 0])
        groups = frequency.group_by_frequency(counts, 4)
        # Chunks of 3 from the rarest: ids 9 8 7 | 6 5 4 | 3 2 1 | 0.
        self.assertAllEqual([3, 2, 2, 2, 1, 1, 1, 0, 0, 0], groups.group_ids)

    def test_groups_without_rows_or_counts(self):
        # 10 rows in chunks of ceil(10 / 6) = 2 fill 5 groups; group 5 is
        # empty and takes the weight of the rarest non-empty group.
        counts = np.arange(10) + 1
        groups = frequency.group_by_frequency(counts, 6)
        self.assertAllEqual([2, 2, 2, 2, 2, 0], groups.group_sizes)
        self.assertAllClose(
            [1, 7 / 3, 11 / 3, 5, 19 / 3, 1], groups.group_weights
        )
        # A group of unseen ids weighs as much as the rarest seen group.
        groups = frequency.group_by_frequency([0, 0, 4, 8], 2)
        self.assertAllClose([1.0, 1.0], groups.group_weights)
        self.assertAllClose(
            [1.0, 1.0, 4.0], frequency.penalty_weights([0, 2, 8])
        )

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "num_groups=0"):
            frequency.group_by_frequency([1, 2], 0)
        with self.assertRaisesRegex(ValueError, "num_groups=3"):
            frequency.group_by_frequency([1, 2], 3)
        with self.assertRaisesRegex(ValueError, "non-negative"):
            frequency.group_by_frequency([1, -2], 1)
        with self.assertRaisesRegex(ValueError, "no id was counted"):
            frequency.group_by_frequency([0, 0], 1)


class SharedAndTowerModel(keras.Model):
    """A subclassed model: a string lookup, one table used for two fields."""

    def __init__(self, vocabulary):
        super().__init__()
        self.lookup = keras.layers.StringLookup(
            vocabulary=vocabulary, num_oov_indices=1
        )
        self.shared = keras_mpe.MixedPrecisionEmbedding(
            len(vocabulary) + 1, 4, num_groups=2
        )
        self.other = keras_mpe.MixedPrecisionEmbedding(50, 4, num_groups=5)
        self.head = keras.layers.Dense(1)

    def call(self, inputs):
        a = self.shared(self.lookup(inputs["a"]))
        b = self.shared(self.lookup(inputs["b"]))
        c = self.other(inputs["c"])
        return self.head(tf.concat([a, b, c], axis=-1))


class CountingTest(tf.test.TestCase):
    def test_counts_through_lookup_and_shared_layer(self):
        rng = np.random.default_rng(1)
        vocabulary = ["x", "y", "z"]
        a = rng.choice(vocabulary + ["unknown"], 100)
        b = rng.choice(vocabulary, 100)
        c = rng.integers(0, 50, 100)
        data = tf.data.Dataset.from_tensor_slices(
            ({"a": a, "b": b, "c": c}, np.zeros(100, np.float32))
        ).batch(16)
        model = SharedAndTowerModel(vocabulary)
        layers = [model.shared, model.other]
        shared, other = frequency.count_ids(model, layers, data)
        index = {"unknown": 0, "x": 1, "y": 2, "z": 3}
        expected = np.bincount(
            [index[s] for s in np.concatenate([a, b])], minlength=4
        )
        self.assertAllEqual(expected, shared)
        self.assertAllEqual(np.bincount(c, minlength=50), other)
        # Counting mode is off afterwards: the layers embed again.
        self.assertGreater(np.abs(model.shared(np.array([1, 2]))).sum(), 0)
        outputs = model({"a": a[:2], "b": b[:2], "c": c[:2]})
        self.assertEqual((2, 1), outputs.shape)

    def test_counting_mode_records_ids_and_returns_zeros(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        with layer.counting() as recorder:
            self.assertAllEqual(
                np.zeros((2, 3, 2)), layer(np.array([[1, 2, 2]] * 2))
            )
            layer(np.array([9]))
            first, second = recorder.take()
            self.assertAllEqual([1, 2, 2] * 2, first)  # flat
            self.assertAllEqual([9], second)
            self.assertEqual([], recorder.take())
            with self.assertRaisesRegex(RuntimeError, "already counting"):
                with layer.counting():
                    pass
        self.assertGreater(np.abs(layer(np.array([1]))).sum(), 0)

    def test_frequency_data_must_be_batches(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
        ids = np.array([[1, 2, 2], [9, 9, 9]], np.int32)
        for bad in (ids, None, 3):
            with self.assertRaisesRegex(ValueError, "frequency_data="):
                frequency.count_ids(model, [layer], bad)
        unbatched = tf.data.Dataset.from_tensor_slices(np.arange(4))
        with self.assertRaisesRegex(
            ValueError, r"`frequency_data` must yield batches.*int64\[\]"
        ):
            frequency.count_ids(model, [layer], unbatched)
        endless = tf.data.Dataset.from_tensor_slices(ids).batch(1).repeat()
        with self.assertRaisesRegex(
            ValueError, r"must be finite.*without `\.repeat\(\)`.*infinite"
        ):
            frequency.count_ids(model, [layer], endless)

    def test_progress_bar_follows_verbose(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
        data = tf.data.Dataset.from_tensor_slices(
            np.array([[1, 2, 2], [9, 9, 9]], np.int32)
        ).batch(1)
        for verbose in (0, 1):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                frequency.count_ids(model, [layer], data, verbose=verbose)
            if verbose:
                self.assertIn("2/2", out.getvalue())
            else:
                self.assertEqual("", out.getvalue())

    def test_counting_costs_no_training_state(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
        before = layer.get_weights()
        data = tf.data.Dataset.from_tensor_slices(
            np.array([[1, 2, 2], [9, 9, 9]], np.int32)
        ).batch(1)
        (counts,) = frequency.count_ids(model, [layer], data)
        self.assertAllEqual([0, 1, 2, 0, 0, 0, 0, 0, 0, 3], counts)
        for old, new in zip(before, layer.get_weights(), strict=True):
            self.assertAllEqual(old, new)


if __name__ == "__main__":
    tf.test.main()
