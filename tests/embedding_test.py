"""MixedPrecisionEmbedding: phase outputs, penalty, errors, save/load."""

import os

import numpy as np
import pytest
import tensorflow as tf
import testing_utils

import keras_mpe
from keras_mpe import _compat
from keras_mpe import initial_table
from keras_mpe.embedding import Phase

keras = _compat.keras
CANDIDATES = (0, 1, 2, 4)


def make_layer(**kwargs):
    """A 12 x 3 layer with 4 groups of 3 rows (rarest ids first)."""
    config = dict(
        input_dim=12,
        output_dim=3,
        bit_candidates=CANDIDATES,
        num_groups=4,
        temperature=0.5,
        bit_penalty=0.01,
    )
    config.update(kwargs)
    layer = keras_mpe.MixedPrecisionEmbedding(**config)
    layer.set_frequencies(np.arange(12) * 10)  # groups 0,0,0,1,1,1,...
    rng = np.random.default_rng(0)
    layer._embeddings.assign(rng.normal(size=(12, 3)).astype(np.float32))
    layer.set_quantizer_parameters([0.9, 0.5, 0.1], [0.1, -0.1, 0.0])
    layer._precision_logits.assign(rng.normal(size=(4, 4)).astype(np.float32))
    return layer


def expected_search(layer, ids):
    table = layer._embeddings.numpy()
    logits = layer._precision_logits.numpy() / layer.current_temperature
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    groups = layer._group_ids.numpy()
    steps, offset = layer.quantizer_parameters()
    out = np.zeros(ids.shape + (3,))
    for k, bits in enumerate(CANDIDATES[1:]):
        q = testing_utils.quantize_np(table[ids], steps[k], offset, bits)
        out += probs[groups[ids], k + 1][..., None] * q
    return out, probs


class PhaseOutputTest(tf.test.TestCase):
    ids = np.array([[0, 5, 11], [3, 3, 8]])

    def test_groups_follow_frequency(self):
        layer = make_layer()
        self.assertAllEqual(
            np.repeat(np.arange(4), 3), layer._group_ids.numpy()
        )
        self.assertAllClose([1, 4, 7, 10], layer._group_weights.numpy())

    def test_float_phase_is_a_plain_embedding(self):
        layer = make_layer()
        self.assertEqual(Phase.FLOAT, layer.phase)
        self.assertAllClose(
            layer._embeddings.numpy()[self.ids], layer(self.ids)
        )
        self.assertAllClose(32.0, layer.average_bits())

    def test_search_phase_mixture_and_penalty(self):
        layer = make_layer()
        layer.set_phase(Phase.SEARCH)
        outputs = layer(self.ids)
        expected, probs = expected_search(layer, self.ids)
        self.assertAllClose(expected, outputs, atol=1e-6)
        # R = sum_g (1 / c_g) * sum_b p_gb * b, weights c = [1, 4, 7, 10].
        cost = (probs @ np.array(CANDIDATES) / [1, 4, 7, 10]).sum()
        self.assertAllClose(0.01 * cost, tf.add_n(layer.losses))
        self.assertAllClose(
            probs @ CANDIDATES, layer.group_summary().expected_bits
        )

    def test_fixed_phase_uses_the_chosen_bits(self):
        layer = make_layer()
        layer._chosen_bits.assign([0, 1, 4, 2])
        layer.set_phase(Phase.FIXED)
        table = layer._embeddings.numpy()
        steps, offset = layer.quantizer_parameters()
        step_of = {1: steps[0], 2: steps[1], 4: steps[2]}
        expected = np.zeros((12, 3))
        for row, bits in enumerate(np.repeat([0, 1, 4, 2], 3)):
            if bits:
                expected[row] = testing_utils.quantize_np(
                    table[row], step_of[bits], offset, bits
                )
        self.assertAllClose(expected, layer(np.arange(12)), atol=1e-6)
        self.assertAllClose(0.0, tf.add_n(layer.losses))
        self.assertAllClose((0 + 1 + 4 + 2) / 4, layer.average_bits())

    def test_select_bits_then_fix_bits(self):
        layer = make_layer()
        layer._precision_logits.assign(
            np.log(
                np.add(
                    [
                        [0.9, 0.05, 0.03, 0.02],
                        [0.1, 0.8, 0.1, 0.0],
                        [0.0, 0.1, 0.5, 0.4],
                        [0.0, 0.0, 0.0, 1.0],
                    ],
                    1e-9,
                )
            )
        )
        testing_utils.layer_weight(layer, "temperature").assign(1.0)
        chosen = layer.select_bits()
        self.assertAllEqual([0, 1, 4, 4], chosen)
        self.assertEqual(Phase.FLOAT, layer.phase)  # a choice, not applied
        layer.fix_bits(chosen)
        self.assertEqual(Phase.FIXED, layer.phase)
        self.assertAllEqual(chosen, layer.bits_per_group())
        # A budget of 1.4 bits per element. P(bits >= 1, 2, 4) per group:
        # (0.1, 0.05, 0.02), (0.9, 0.1, 0), (1, 0.9, 0.4), (1, 1, 1).
        # Level 0.4 gives [0, 1, 4, 4] (2.25), 0.9 [0, 1, 2, 4] (1.75);
        # above both 0.9s (in either order: 1.5 each) [0, 0, 1, 4] fits.
        layer.fix_bits(layer.select_bits(target_bits=1.4))
        self.assertAllEqual([0, 0, 1, 4], layer.bits_per_group())
        self.assertAllClose(1.25, layer.average_bits())
        with self.assertRaisesRegex(ValueError, "rule='argmax', target_bits"):
            layer.select_bits("argmax", target_bits=1.5)

    def test_gradients_per_phase(self):
        layer = make_layer()
        variables = [
            layer._embeddings,
            layer._step_sizes,
            layer._offset,
            layer._precision_logits,
        ]

        def grads():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(self.ids) ** 2)
                loss += tf.add_n(layer.losses)
            return [
                tf.convert_to_tensor(g) if g is not None else None
                for g in tape.gradient(
                    loss, [_compat.tf_variable(v) for v in variables]
                )
            ]

        def norm(g):
            return 0.0 if g is None else float(tf.norm(g))

        table, steps, offset, logits = grads()
        self.assertGreater(norm(table), 0)
        self.assertEqual(0.0, norm(steps) + norm(logits))
        layer.set_phase(Phase.SEARCH)
        table, steps, offset, logits = grads()
        self.assertGreater(min(norm(table), norm(steps), norm(logits)), 0)
        layer._chosen_bits.assign([1, 1, 2, 4])
        layer.set_phase(Phase.FIXED)
        table, steps, offset, logits = grads()
        self.assertGreater(min(norm(table), norm(steps)), 0)
        self.assertEqual(0.0, norm(logits))

    def test_static_shapes_compute_the_same(self):
        layer = make_layer()
        layer._chosen_bits.assign([0, 1, 4, 2])
        variables = [_compat.tf_variable(v) for v in layer.trainable_weights]

        def outputs_and_grads():
            with tf.GradientTape() as tape:
                outputs = layer(self.ids)
                loss = tf.reduce_sum(outputs**2) + tf.add_n(layer.losses)
            grads = tape.gradient(loss, variables)
            return [outputs] + [tf.convert_to_tensor(g) for g in grads]

        # The static form under XLA: its conditional on the phase, and the
        # gradient recomputed inside it, as compiled.
        compiled = tf.function(outputs_and_grads, jit_compile=True)
        for phase in Phase:
            layer.set_phase(phase)
            layer.static_shapes = False
            dynamic = outputs_and_grads()
            layer.static_shapes = True
            static = outputs_and_grads()
            layer.static_shapes = False  # XLA is detected
            for other in (static, compiled()):
                for a, b in zip(dynamic, other, strict=True):
                    self.assertAllClose(a, b, atol=1e-6)

    def test_step_sizes_follow_the_table_scale(self):
        layer = make_layer()
        layer.initialize_step_sizes()
        mean_abs = np.abs(layer._embeddings.numpy()).mean()
        root = [1, np.sqrt(2), np.sqrt(8)]  # sqrt(2^(b-1)), b = 1, 2, 4
        steps, offset = layer.quantizer_parameters()
        self.assertAllClose(2 * mean_abs / np.array(root), steps, rtol=1e-5)
        self.assertAllClose([0.1, -0.1, 0.0], offset)  # kept
        # Stored in units of the scale.
        self.assertAllClose(mean_abs, layer._quantizer_scale.numpy())
        self.assertAllClose(2 / np.array(root), layer._step_sizes.numpy())

    def test_adam_moves_quantizer_relative_to_scale(self):
        # Adam's first step moves each variable by its learning rate: with
        # alpha and beta stored in units of the table's scale, that is the
        # learning rate times the scale in the table's units.
        layer = make_layer()
        scale = 0.01
        layer._embeddings.assign(layer._embeddings.numpy() * scale)
        layer.initialize_step_sizes()
        layer.set_phase(Phase.SEARCH)
        before = layer.quantizer_parameters()
        optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        variables = [
            _compat.tf_variable(v) for v in (layer._step_sizes, layer._offset)
        ]
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(self.ids) ** 3)
        optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables, strict=True)
        )
        after = layer.quantizer_parameters()
        mean_abs = float(layer._quantizer_scale.numpy())
        self.assertBetween(mean_abs, 0.5 * scale, 1.5 * scale)
        for old, new in zip(before, after, strict=True):
            moved = np.abs(new - old)
            self.assertGreater(moved.max(), 0.5e-3 * mean_abs)
            self.assertLess(moved.max(), 1.01e-3 * mean_abs)

    def test_rewind_restores_the_snapshot(self):
        layer = make_layer()
        layer.snapshot_embeddings()
        saved = layer._embeddings.numpy()
        layer._embeddings.assign(saved + 1.0)
        layer.rewind()
        self.assertAllEqual(saved, layer._embeddings.numpy())


class RewindTest(tf.test.TestCase):
    """The rewind target is made again from the seed, not kept."""

    def test_initial_values_are_remade_from_the_seed(self):
        # Two chunks of 65,536 rows and a part of a third.
        rows = 2 * initial_table.CHUNK_ROWS + 5
        layer = keras_mpe.MixedPrecisionEmbedding(rows, 2, seed=7)
        layer.build()
        built = layer.embeddings.numpy()
        # Per row: the table and a one-byte group id, nothing else.
        per_row = [
            w for w in layer.weights if len(w.shape) and w.shape[0] == rows
        ]
        self.assertEqual(
            [(rows, 2), (rows,)], [tuple(w.shape) for w in per_row]
        )
        self.assertEqual("int8", tf.as_dtype(layer._group_ids.dtype).name)
        # The chunks differ (a seed per chunk); the same seed, in a new
        # layer, gives the same table.
        chunk = initial_table.CHUNK_ROWS
        self.assertNotAllClose(built[:5], built[chunk : chunk + 5])
        again = keras_mpe.MixedPrecisionEmbedding.from_config(
            layer.get_config()
        )
        again.build()
        self.assertAllEqual(built, again.embeddings.numpy())
        other = keras_mpe.MixedPrecisionEmbedding(rows, 2, seed=8)
        other.build()
        self.assertNotAllClose(built, other.embeddings.numpy())
        # Snapshot of an untrained table: no copy; the rewind remakes it.
        layer.snapshot_embeddings()
        self.assertIsNone(layer._rewind_copy)
        layer.embeddings.assign(built * 3.0)
        layer.rewind()
        self.assertAllEqual(built, layer.embeddings.numpy())

    def test_a_trained_table_is_copied_and_a_lost_copy_is_named(self):
        layer = make_layer(seed=3)
        pretrained = layer.embeddings.numpy() + 0.5
        layer.embeddings.assign(pretrained)
        layer.snapshot_embeddings()
        self.assertIsNotNone(layer._rewind_copy)
        layer.embeddings.assign(pretrained * 2.0)
        layer.rewind()
        self.assertAllEqual(pretrained, layer.embeddings.numpy())
        # A process resuming from a checkpoint has the weights (the flag
        # included) but not the host copy.
        resumed = make_layer(seed=3)
        resumed.set_weights(layer.get_weights())
        with self.assertRaisesRegex(RuntimeError, "rewind_embeddings=False"):
            resumed.rewind()

    def test_group_ids_take_the_narrowest_type(self):
        for groups, dtype in ((128, "int8"), (129, "int16"), (40000, "int32")):
            layer = keras_mpe.MixedPrecisionEmbedding(
                40000, 1, num_groups=groups
            )
            layer.build()
            self.assertEqual(
                dtype, tf.as_dtype(layer._group_ids.dtype).name, groups
            )


class BadInputTest(tf.test.TestCase):
    def test_constructor_arguments(self):
        cases = [
            (dict(input_dim=0), "input_dim=0"),
            (dict(input_dim=2.5), "input_dim=2.5"),
            (dict(output_dim=-1), "output_dim=-1"),
            (dict(bit_candidates=(0, 9)), r"bit_candidates=\(0, 9\)"),
            (dict(bit_candidates=(-1, 2)), r"from 0 to 8"),
            (dict(bit_candidates=(2, 2)), "must not repeat"),
            (dict(bit_candidates=(0,)), "at least one bit-width above 0"),
            (dict(bit_candidates=()), "bit_candidates=()"),
            (dict(num_groups=0), "num_groups=0"),
            (dict(num_groups=11), "from 1 to input_dim=10. .*num_groups=11"),
            (dict(temperature=0.0), "temperature=0.0"),
            (dict(temperature="0.1"), "temperature=0.1"),
            (dict(temperature=float("inf")), "temperature=inf"),
            (dict(bit_penalty=-1e-3), "bit_penalty=-0.001"),
            (dict(seed=-1), "seed=-1"),
            (dict(seed=1.5), "seed=1.5"),
        ]
        for kwargs, message in cases:
            config = dict(input_dim=10, output_dim=2, num_groups=2)
            config.update(kwargs)
            with self.assertRaisesRegex(ValueError, message):
                keras_mpe.MixedPrecisionEmbedding(**config)

    def test_search_length_arguments(self):
        layer = keras_mpe.MixedPrecisionEmbedding(10, 2, num_groups=2)
        layer.build()
        for steps, rate, message in (
            (0, 1e-3, "steps=0"),
            (2.5, 1e-3, "steps=2.5"),
            (10, 0.0, "learning_rate=0.0"),
            (10, float("nan"), "learning_rate=nan"),
        ):
            with self.assertRaisesRegex(ValueError, message):
                layer.set_search_length(steps, rate)

    def test_default_groups_fit_small_vocabularies(self):
        for input_dim, groups in ((50, 50), (128, 128), (10_000, 128)):
            layer = keras_mpe.MixedPrecisionEmbedding(input_dim, 2)
            self.assertEqual(groups, layer.num_groups)
        config = keras_mpe.MixedPrecisionEmbedding(50, 2).get_config()
        self.assertEqual(50, config["num_groups"])

    def test_ids_out_of_range_eager(self):
        layer = make_layer()
        # 2^32 + 5 would read row 5 if the ids were cast before the check.
        for bad in ([[0, 12]], [[-1, 3]], [[2**32 + 5]], [[2**32]]):
            with self.assertRaisesRegex(
                tf.errors.InvalidArgumentError,
                r"MixedPrecisionEmbedding .*: .*\[0, input_dim=12\)",
            ):
                layer(np.array(bad, np.int64))

    def test_ids_out_of_range_in_fit(self):
        layer = make_layer()
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer, 2))
        with self.assertRaisesRegex(
            tf.errors.InvalidArgumentError, r"\[0, input_dim=12\)"
        ):
            model.fit(np.array([[1, 12]]), np.array([1.0]), verbose=0)

    def test_set_quantizer_parameters(self):
        layer = make_layer()
        with self.assertRaisesRegex(
            ValueError, r"shape \(3,\), one per .*\(2,\)"
        ):
            layer.set_quantizer_parameters([0.1, 0.2], [0.0] * 3)
        with self.assertRaisesRegex(ValueError, r"`offset` .*\(3,\).*\(4,\)"):
            layer.set_quantizer_parameters([0.1] * 3, [0.0] * 4)

    def test_fix_bits(self):
        layer = make_layer()
        with self.assertRaisesRegex(ValueError, r"4 values from .*\[0 3 1 2\]"):
            layer.fix_bits([0, 3, 1, 2])
        with self.assertRaisesRegex(ValueError, "4 values"):
            layer.fix_bits([0, 1])
        layer.fix_bits([0, 4, 1, 2])
        self.assertEqual(Phase.FIXED, layer.phase)
        self.assertAllClose((0 + 4 + 1 + 2) / 4, layer.average_bits())

    def test_set_frequencies_shape(self):
        with self.assertRaisesRegex(ValueError, r"shape \(12,\)"):
            make_layer().set_frequencies(np.ones(5))


def _searched_model():
    layer = make_layer(input_dim=12, num_groups=4)
    layer.set_phase(Phase.SEARCH)
    model = testing_utils.ctr_model(layer, fields=3)
    return model, layer


class SerializationTest(tf.test.TestCase):
    ids = np.array([[0, 5, 11], [3, 3, 8]], np.int32)

    def test_config_round_trip(self):
        layer = make_layer()
        config = layer.get_config()
        rebuilt = keras_mpe.MixedPrecisionEmbedding.from_config(config)
        self.assertEqual(config, rebuilt.get_config())
        self.assertEqual(CANDIDATES, rebuilt.bit_candidates)

    def _assert_same_state(self, model, loaded):
        self.assertAllClose(
            model.predict(self.ids, verbose=0),
            loaded.predict(self.ids, verbose=0),
            atol=1e-6,
        )
        (layer,) = keras_mpe.find_layers(model)
        (other,) = keras_mpe.find_layers(loaded)
        testing_utils.assert_same_layer_state(layer, other)

    def test_save_and_load(self):
        model, layer = _searched_model()
        formats = (
            ["model.keras"]
            if _compat.IS_KERAS_3
            else ["saved_model", "model.h5"]
        )
        for fmt in formats:
            path = os.path.join(self.get_temp_dir(), fmt)
            if fmt == "saved_model":
                model.save(path, save_format="tf")
            else:
                model.save(path)
            self._assert_same_state(model, keras.models.load_model(path))
        layer._chosen_bits.assign([0, 2, 1, 4])
        layer.set_phase(Phase.FIXED)
        path = os.path.join(self.get_temp_dir(), formats[-1])
        model.save(path, overwrite=True)
        self._assert_same_state(model, keras.models.load_model(path))


def test_xla_compilation_is_detected_while_tracing():
    seen = []

    def probe():
        seen.append(_compat.in_xla_compilation())
        return tf.constant(0)

    tf.function(probe, jit_compile=True)()
    tf.function(lambda: tf.function(probe)(), jit_compile=True)()  # nested
    tf.function(probe)()
    probe()
    assert seen == [True, True, False, False]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_trains_under_xla(jit_compile):
    layer = make_layer()
    layer.set_phase(Phase.SEARCH)  # static shapes under XLA: detected
    model = testing_utils.compile_ctr(
        testing_utils.ctr_model(layer, 3), jit_compile=jit_compile
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, (64, 3)).astype(np.int32)
    labels = rng.integers(0, 2, 64).astype(np.float32)
    before = layer._precision_logits.numpy()
    history = model.fit(ids, labels, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(before, layer._precision_logits.numpy())
