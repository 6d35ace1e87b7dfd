"""MPECallback: the phase schedule, learning behaviour, resume, errors."""

import contextlib
import io
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
import testing_utils

import keras_mpe
from keras_mpe import _compat
from keras_mpe import selection
from keras_mpe.embedding import Phase

keras = _compat.keras


class Probe(keras.callbacks.Callback):
    """Records the layer's state around the selection."""

    def __init__(self, layer, select_epoch):
        super().__init__()
        self.layer, self.select_epoch = layer, select_epoch
        self.logits_at_end = []

    def on_train_begin(self, logs=None):
        self.initial_table = self.layer._embeddings.numpy()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.select_epoch:
            self.table_after_selection = self.layer._embeddings.numpy()

    def on_epoch_end(self, epoch, logs=None):
        self.logits_at_end.append(self.layer._precision_logits.numpy())


class ScoreByEpoch(keras.callbacks.Callback):
    """Logs a made-up validation score that is best at `best_epoch`."""

    def __init__(self, best_epoch):
        super().__init__()
        self.best_epoch = best_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs["val_score"] = -abs(epoch - self.best_epoch)


class Recorder(keras.callbacks.Callback):
    """Records the layer's state at train begin and end and around every
    epoch. Placed after MPECallback, it sees each step of the schedule
    done: at the begin of epoch `search_epochs` the selection, rewind and
    optimizer reset have happened."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.states = {}

    def _record(self, key):
        steps, _ = self.layer.quantizer_parameters()
        self.states[key] = {
            "table": self.layer.embeddings.numpy().copy(),
            "scale": float(
                testing_utils.layer_weight(self.layer, "quantizer_scale")
            ),
            "step_sizes": steps,
            "probabilities": self.layer.precision_probabilities(),
        }

    def on_train_begin(self, logs=None):
        self._record("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._record(("begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self._record(("end", epoch))

    def on_train_end(self, logs=None):
        self._record("train_end")


class ScheduleTest(tf.test.TestCase):
    def _ctr_setup(self):
        """Zipf CTR data, an 8-group table, the compiled CTR model."""
        ids, labels = testing_utils.zipf_ctr(rows=2000)
        data = testing_utils.dataset(ids, labels)
        layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=8)
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        return ids, data, layer, model

    def test_phases_logs_rewind_and_best_epoch(self):
        ids, data, layer, model = self._ctr_setup()
        probe = Probe(layer, select_epoch=4)
        callback = keras_mpe.MPECallback(
            data,
            search_epochs=4,
            warmup_epochs=1,
            monitor="val_score",
            mode="max",
            verbose=0,
        )
        history = model.fit(
            data,
            epochs=6,
            verbose=0,
            callbacks=[ScoreByEpoch(best_epoch=2), callback, probe],
        )
        logs = history.history
        self.assertEqual([0, 1, 1, 1, 2, 2], logs["mpe_phase"])
        self.assertEqual(32.0, logs["mpe_bits"][0])
        for bits, ratio in zip(
            logs["mpe_bits"], logs["mpe_compression"], strict=True
        ):
            self.assertAllClose(32.0 / bits, ratio)
        self.assertAllClose(layer.average_bits(), logs["mpe_bits"][-1])
        # The table was rewound to its values at the start of training.
        self.assertAllEqual(probe.initial_table, probe.table_after_selection)
        # The bits were chosen from the logits of the best epoch (2).
        expected = keras_mpe.embedding.selection.select_bits(
            _softmax(probe.logits_at_end[2] / layer.current_temperature),
            layer.bit_candidates,
        )
        self.assertAllEqual(expected, layer._chosen_bits.numpy())
        self.assertNotAllClose(probe.logits_at_end[2], probe.logits_at_end[3])
        testing_utils.assert_counted(
            layer, np.bincount(ids.ravel(), minlength=1000)
        )

    def test_fits_with_and_without_jit_compile(self):
        ids, labels = testing_utils.zipf_ctr(rows=512)
        data = testing_utils.dataset(ids, labels)
        for jit_compile in (True, False):
            layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
            model = testing_utils.compile_ctr(
                testing_utils.ctr_model(layer), jit_compile=jit_compile
            )
            callback = keras_mpe.MPECallback(data, search_epochs=1, verbose=0)
            history = model.fit(data, epochs=2, verbose=0, callbacks=[callback])
            self.assertEqual([1, 2], history.history["mpe_phase"])
            self.assertTrue(np.all(np.isfinite(history.history["loss"])))

    def test_target_bits_sets_the_size(self):
        _, data, layer, model = self._ctr_setup()
        probe = Probe(layer, select_epoch=2)
        callback = keras_mpe.MPECallback(
            data, search_epochs=2, target_bits=1.0, verbose=0
        )
        history = model.fit(
            data, epochs=3, verbose=0, callbacks=[callback, probe]
        )
        self.assertLessEqual(layer.average_bits(), 1.0)
        self.assertAllClose(
            layer.average_bits(), history.history["mpe_bits"][2]
        )
        probabilities = _softmax(
            probe.logits_at_end[1] / layer.current_temperature
        )
        self.assertAllEqual(
            keras_mpe.selection.budget_bits(
                probabilities, layer.bit_candidates, layer.group_sizes(), 1.0
            ),
            layer.bits_per_group(),
        )

    def test_optimizer_state_is_reset_at_selection(self):
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        data = testing_utils.dataset(ids, labels)
        layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        model.fit(data, epochs=3, verbose=0, callbacks=[callback])
        state = _compat.optimizer_variables(model.optimizer)
        iterations = int(model.optimizer.iterations.numpy())
        # One retraining epoch of 4 steps since the reset.
        self.assertEqual(4, iterations)
        self.assertTrue(any(np.abs(v.numpy()).sum() > 0 for v in state))

    def test_reset_keeps_the_learning_rate_and_retraining_learns(self):
        keras.utils.set_random_seed(0)
        _, data, layer, model = self._ctr_setup()
        recorder = Recorder(layer)
        callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        model.fit(data, epochs=3, verbose=0, callbacks=[callback, recorder])
        # The reset zeroed the optimizer's state, not its learning rate.
        self.assertAllClose(1e-2, float(model.optimizer.learning_rate))
        # One retraining epoch (8 Adam steps of about 1e-2) moved the
        # rewound table's frequent rows.
        rewound = recorder.states["begin", 2]["table"]
        retrained = recorder.states["train_end"]["table"]
        self.assertGreater(np.abs(retrained - rewound).max(), 1e-2)

    def test_rewind_returns_to_the_table_at_the_start_of_fit(self):
        keras.utils.set_random_seed(0)
        _, data, layer, model = self._ctr_setup()
        built = layer.embeddings.numpy().copy()
        model.fit(data, epochs=1, verbose=0)  # float pre-training
        recorder = Recorder(layer)
        callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        model.fit(data, epochs=3, verbose=0, callbacks=[callback, recorder])
        start = recorder.states["train_begin"]["table"]
        self.assertGreater(np.abs(start - built).max(), 1e-2)
        # Rewound at the selection to the table this fit started from,
        # not to the one the layer was built with.
        self.assertAllEqual(start, recorder.states["begin", 2]["table"])

    def test_warns_when_the_search_did_not_move(self):
        keras.utils.set_random_seed(0)
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        data = testing_utils.dataset(ids, labels)
        for temperature, warns in ((1e4, True), (0.01, False)):
            layer = keras_mpe.MixedPrecisionEmbedding(
                1000, 4, num_groups=4, bit_penalty=1e-2, temperature=temperature
            )
            model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
            callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(data, epochs=3, verbose=0, callbacks=[callback])
            messages = [
                str(w.message)
                for w in caught
                if "close to uniform" in str(w.message)
            ]
            self.assertLen(messages, int(warns), msg=temperature)
            if warns:
                self.assertRegex(messages[0], r"distance from uniform 0\.0")
                self.assertIn("temperature (now 10000)", messages[0])

    def test_messages_print_as_keras_prints(self):
        ids, labels = testing_utils.zipf_ctr(rows=512)
        data = testing_utils.dataset(ids, labels)
        if _compat.IS_KERAS_3:
            switches = keras.config
        else:
            switches = keras.utils
        for interactive in (True, False):
            layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
            model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
            callback = keras_mpe.MPECallback(data, search_epochs=1, verbose=1)
            out = io.StringIO()
            if not interactive:
                switches.disable_interactive_logging()
            try:
                with contextlib.redirect_stdout(out):
                    model.fit(data, epochs=2, verbose=0, callbacks=[callback])
            finally:
                switches.enable_interactive_logging()
            printed = "MPECallback: " in out.getvalue()
            # To stdout, or to absl logging when Keras' is turned off.
            self.assertEqual(interactive, printed, out.getvalue()[-500:])

    def test_tensorboard_summaries(self):
        pytest.importorskip("tensorboard")
        pytest.importorskip("matplotlib")
        ids, labels = testing_utils.zipf_ctr(rows=512)
        data = testing_utils.dataset(ids, labels)
        layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        log_dir = os.path.join(self.get_temp_dir(), "logs")
        callback = keras_mpe.MPECallback(
            data, search_epochs=2, log_dir=log_dir, verbose=0
        )
        history = model.fit(data, epochs=3, verbose=0, callbacks=[callback])
        tags = {}
        folder = os.path.join(log_dir, "mpe")
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append((event.step, value))
        steps = {
            tag: [step for step, _ in found] for tag, found in tags.items()
        }
        self.assertEqual([0, 1, 2], steps["mpe_bits"])
        self.assertEqual([0, 1, 2], steps["mpe_compression"])
        self.assertEqual([1], steps[f"{layer.name}/expected_bits"])
        self.assertEqual([2], steps[f"{layer.name}/bits_per_group"])
        bits = [tf.make_ndarray(value.tensor) for _, value in tags["mpe_bits"]]
        self.assertAllClose(history.history["mpe_bits"], bits)
        # The image is a PNG of some size.
        _, image = tags[f"{layer.name}/bits_per_group"][0]
        png = tf.make_ndarray(image.tensor)[2]
        self.assertEqual(b"\x89PNG", png[:4])

    def test_a_second_fit_with_the_callback_searches_anew(self):
        keras.utils.set_random_seed(0)
        _, data, layer, model = self._ctr_setup()
        first = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        model.fit(data, epochs=3, verbose=0, callbacks=[first])
        recorder = Recorder(layer)
        second = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        history = model.fit(
            data, epochs=3, verbose=0, callbacks=[second, recorder]
        )
        self.assertEqual([0, 1, 2], history.history["mpe_phase"])
        start = recorder.states["train_begin"]["table"]
        self.assertAllEqual(start, recorder.states["begin", 2]["table"])

    def test_step_sizes_are_set_from_the_warmed_up_table(self):
        keras.utils.set_random_seed(0)
        _, data, layer, model = self._ctr_setup()
        recorder = Recorder(layer)
        callback = keras_mpe.MPECallback(
            data, search_epochs=2, warmup_epochs=1, verbose=0
        )
        model.fit(data, epochs=3, verbose=0, callbacks=[callback, recorder])
        built = np.abs(recorder.states["train_begin"]["table"]).mean()
        search = recorder.states["begin", 1]  # the first search epoch
        mean_abs = np.abs(search["table"]).mean()
        # The warm-up changed the table's scale by more than 5%.
        self.assertGreater(abs(mean_abs / built - 1), 0.05)
        self.assertAllClose(mean_abs, search["scale"], rtol=1e-5)
        self.assertAllClose(
            [
                keras_mpe.quantizer.initial_step_size(mean_abs, bits)
                for bits in layer.quantized_bits
            ],
            search["step_sizes"],
            rtol=1e-5,
        )

    def test_best_epoch_can_be_the_first_search_epoch(self):
        keras.utils.set_random_seed(0)
        _, data, layer, model = self._ctr_setup()
        recorder = Recorder(layer)
        callback = keras_mpe.MPECallback(
            data,
            search_epochs=3,
            warmup_epochs=1,
            monitor="val_score",
            mode="max",
            verbose=0,
        )
        model.fit(
            data,
            epochs=4,
            verbose=0,
            callbacks=[ScoreByEpoch(best_epoch=1), callback, recorder],
        )
        first = recorder.states["end", 1]["probabilities"]
        second = recorder.states["end", 2]["probabilities"]
        self.assertGreater(np.abs(first - second).max(), 1e-3)
        # Epoch 1, the first search epoch, scored best: its weights were
        # restored before the selection and its distribution chose.
        self.assertAllClose(
            first, recorder.states["begin", 3]["probabilities"], atol=1e-6
        )
        self.assertAllEqual(
            keras_mpe.selection.select_bits(first, layer.bit_candidates),
            layer.bits_per_group(),
        )


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class StepsOfFirstEpoch(keras.callbacks.Callback):
    """The optimizer steps of the first epoch (the optimizer is reset at
    selection, so its final count is the last epochs')."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.steps = _compat.optimizer_steps(self.model.optimizer)


class NetworkRecorder(keras.callbacks.Callback):
    """Records the weights of every layer but `layer` at each epoch's begin
    and end. Placed after MPECallback, it sees the selection done."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.states = {}

    def _record(self, key):
        self.states[key] = [
            weight
            for other in self.model.layers
            if other is not self.layer
            for weight in other.get_weights()
        ]

    def on_epoch_begin(self, epoch, logs=None):
        self._record(("begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self._record(("end", epoch))


class NetworkRewindTest(tf.test.TestCase):
    """`rewind_network`: which network the retraining starts from."""

    def _fit(self, **callback_kwargs):
        """Warm-up epoch 0, search 1-2, selection at the begin of 3."""
        keras.utils.set_random_seed(0)
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        data = testing_utils.dataset(ids, labels)
        layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
        model = testing_utils.compile_ctr(
            testing_utils.ctr_model(layer, batch_norm=True)
        )
        recorder = NetworkRecorder(layer)
        callback = keras_mpe.MPECallback(
            data, search_epochs=3, verbose=0, **callback_kwargs
        )
        model.fit(data, epochs=4, verbose=0, callbacks=[callback, recorder])
        states = recorder.states
        # Dense kernels and biases, BatchNormalization's scale, offset and
        # moving statistics: every one trained during the search.
        self.assertLen(states["end", 0], 8)
        for warm, searched in zip(
            states["end", 0], states["end", 2], strict=True
        ):
            self.assertGreater(np.abs(warm - searched).max(), 1e-4)
        return states, layer

    def test_retrains_from_the_search_start(self):
        states, layer = self._fit()
        for warm, retrained in zip(
            states["end", 0], states["begin", 3], strict=True
        ):
            self.assertAllEqual(warm, retrained)
        self.assertEqual(Phase.FIXED, layer.phase)

    def test_reference_goes_on_from_the_last_search_epoch(self):
        states, _ = self._fit(rewind_network=False)
        for searched, retrained in zip(
            states["end", 2], states["begin", 3], strict=True
        ):
            self.assertAllEqual(searched, retrained)


class TemperatureTest(tf.test.TestCase):
    """`temperature=None`: tau = learning rate * search steps / 64."""

    def _fit(self, data, callback_data=None, temperature=None, **kwargs):
        layer = keras_mpe.MixedPrecisionEmbedding(
            1000, 4, num_groups=4, temperature=temperature
        )
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        callback = keras_mpe.MPECallback(
            data if callback_data is None else callback_data,
            search_epochs=3,
            verbose=0,
            **kwargs,
        )
        first = StepsOfFirstEpoch()
        model.fit(data, epochs=4, verbose=0, callbacks=[callback, first])
        self.steps_per_epoch = first.steps
        return layer

    def test_set_from_the_steps_and_the_learning_rate(self):
        ids, labels = testing_utils.zipf_ctr(rows=2000)
        data = testing_utils.dataset(ids, labels)  # 8 batches
        # Warm-up epoch 0, search epochs 1-2: 16 steps at Adam's 1e-2.
        self.assertAllClose(0.0025, self._fit(data).current_temperature)
        # Steps unknown to fit (a filtered dataset): the optimizer's steps
        # in the warm-up epoch (Keras takes one more at the end of a dataset
        # of unknown length).
        unknown = data.filter(lambda x, y: True)
        layer = self._fit(unknown, callback_data=data)
        self.assertIn(self.steps_per_epoch, (8, 9))
        self.assertAllClose(
            1e-2 * 2 * self.steps_per_epoch / 64, layer.current_temperature
        )
        # No warm-up: 3 search epochs, the steps of `frequency_data`.
        layer = self._fit(unknown, callback_data=data, warmup_epochs=0)
        self.assertAllClose(0.00375, layer.current_temperature)
        # A given temperature stays.
        layer = self._fit(data, temperature=0.05)
        self.assertAllClose(0.05, layer.current_temperature)

    def test_warns_when_the_steps_are_unknown(self):
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        unknown = testing_utils.dataset(ids, labels).filter(lambda x, y: True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer = self._fit(unknown, warmup_epochs=0)
        messages = [str(w.message) for w in caught]
        self.assertTrue(
            any("steps per epoch is unknown" in m for m in messages), messages
        )
        self.assertAllClose(
            keras_mpe.embedding.AUTO_TEMPERATURE_START,
            layer.current_temperature,
        )

    def test_kept_in_the_config_and_the_weights(self):
        layer = keras_mpe.MixedPrecisionEmbedding(100, 4, num_groups=4)
        layer.build()
        layer.set_search_length(1280, 1e-3)
        self.assertAllClose(0.02, layer.current_temperature)
        config = layer.get_config()
        self.assertIsNone(config["temperature"])
        copy = keras_mpe.MixedPrecisionEmbedding.from_config(config)
        copy.build()
        copy.set_weights(layer.get_weights())
        self.assertAllClose(0.02, copy.current_temperature)


class LearningTest(tf.test.TestCase):
    @pytest.mark.slow
    def test_search_moves_at_any_length(self):
        """The same data in batches of 16 and of 512 (32 times the search
        steps): with the temperature set from the search's length both
        searches move the distributions about as far; a fixed 0.1 leaves
        the short one near uniform."""
        ids, labels = testing_utils.zipf_ctr(rows=4096)
        moved = {}
        for batch, temperature in ((512, None), (16, None), (512, 0.1)):
            keras.utils.set_random_seed(0)
            data = testing_utils.dataset(ids, labels, batch_size=batch)
            layer = keras_mpe.MixedPrecisionEmbedding(
                1000, 4, num_groups=8, temperature=temperature
            )
            model = testing_utils.compile_ctr(
                testing_utils.ctr_model(layer), learning_rate=1e-3
            )
            callback = keras_mpe.MPECallback(data, search_epochs=3, verbose=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(data, epochs=4, verbose=0, callbacks=[callback])
            moved[batch, temperature] = selection.distance_from_uniform(
                layer.precision_probabilities()
            )
        # Measured: 1.0 and 0.99 with None, 0.047 with 0.1.
        self.assertGreater(moved[512, None], 0.5)
        self.assertGreater(moved[16, None], 0.5)
        self.assertLess(moved[512, 0.1], 0.1)

    @pytest.mark.slow
    def test_rare_groups_get_fewer_bits_and_penalty_lowers_bits(self):
        _, weak, weak_history, _ = testing_utils.train_searched(
            bit_penalty=1e-2
        )
        _, strong, strong_history, _ = testing_utils.train_searched(
            bit_penalty=1.0
        )
        for layer in (weak, strong):
            groups = layer.group_summary()
            # Groups 0-3 hold the rarer half of the ids, 4-7 the frequent.
            expected, chosen = groups.expected_bits, groups.bits
            self.assertLess(expected[:4].mean() + 0.5, expected[4:].mean())
            self.assertLess(chosen[:4].mean() + 1.0, chosen[4:].mean())
        self.assertLess(strong.average_bits() + 0.5, weak.average_bits())
        # Expected bits at the end of the last search epoch (index 2).
        self.assertLess(
            strong_history.history["mpe_bits"][2] + 0.5,
            weak_history.history["mpe_bits"][2],
        )


class ResumeTest(tf.test.TestCase):
    def test_checkpoint_restore_mid_search(self):
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        data = testing_utils.dataset(ids, labels)

        def build():
            keras.utils.set_random_seed(1)
            layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
            model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
            return model, layer

        class StopAfter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    self.model.stop_training = True

        model, layer = build()
        callback = keras_mpe.MPECallback(data, search_epochs=3, verbose=0)
        model.fit(data, epochs=5, verbose=0, callbacks=[callback, StopAfter()])
        self.assertEqual(Phase.SEARCH, layer.phase)
        path = os.path.join(self.get_temp_dir(), "mid_search.weights.h5")
        model.save_weights(path)

        restored, restored_layer = build()
        restored.load_weights(path)
        self.assertEqual(Phase.SEARCH, restored_layer.phase)
        testing_utils.assert_same_layer_state(layer, restored_layer)

        def never_iterated():
            raise AssertionError("frequencies were counted again")
            yield

        resumed = keras_mpe.MPECallback(
            never_iterated(), search_epochs=3, verbose=0
        )
        # The network's weights at the search's start were in the first
        # process's memory only: said, not silently skipped.
        with self.assertWarnsRegex(UserWarning, "resumed from a checkpoint"):
            history = restored.fit(
                data, epochs=5, initial_epoch=2, verbose=0, callbacks=[resumed]
            )
        self.assertEqual([1, 2, 2], history.history["mpe_phase"])
        self.assertEqual(Phase.FIXED, restored_layer.phase)


class Crash(keras.callbacks.Callback):
    """Fails the fit at the end of `epoch`, as a lost worker would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("crash")


class BackupAndRestoreTest(tf.test.TestCase):
    def test_crash_mid_search_with_monitor(self):
        # The best search epoch (1) is behind the crash (end of 2): its
        # precisions must survive in the checkpoint, not in memory. (The
        # network's copy from the search's start cannot: a resume after
        # it retrains without it, so rewind_network is off here.)
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        data = testing_utils.dataset(ids, labels)
        backup = os.path.join(self.get_temp_dir(), "backup")

        def fit(*extra, best_epoch=1):
            keras.utils.set_random_seed(1)
            layer = keras_mpe.MixedPrecisionEmbedding(
                1000, 4, num_groups=4, bit_penalty=1e-2, temperature=0.01
            )
            model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
            callback = keras_mpe.MPECallback(
                data,
                search_epochs=4,
                monitor="val_score",
                rewind_network=False,
                verbose=0,
            )
            model.fit(
                data,
                epochs=6,
                verbose=0,
                callbacks=[ScoreByEpoch(best_epoch), callback, *extra],
            )
            bits = layer.bits_per_group()
            return bits, model.predict(ids[:64], verbose=0)

        bits, predictions = fit()
        with self.assertRaisesRegex(RuntimeError, "crash"):
            fit(keras.callbacks.BackupAndRestore(backup), Crash(epoch=2))
        resumed_bits, resumed = fit(keras.callbacks.BackupAndRestore(backup))
        self.assertAllEqual(bits, resumed_bits)
        testing_utils.assert_same_predictions(predictions, resumed)
        # The last search epoch would choose other bits here, so a resume
        # that lost the best epoch would show.
        self.assertNotAllEqual(bits, fit(best_epoch=3)[0])

    def test_crash_in_the_warmup_with_the_network_rewind(self):
        # A checkpoint from before the search: the resumed fit copies the
        # network when its search starts, as the uninterrupted one did.
        ids, labels = testing_utils.zipf_ctr(rows=1000)
        data = testing_utils.dataset(ids, labels)
        backup = os.path.join(self.get_temp_dir(), "backup")

        def fit(*extra):
            keras.utils.set_random_seed(1)
            layer = keras_mpe.MixedPrecisionEmbedding(
                1000, 4, num_groups=4, bit_penalty=1e-2, temperature=0.01
            )
            model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
            callback = keras_mpe.MPECallback(data, search_epochs=3, verbose=0)
            model.fit(data, epochs=4, verbose=0, callbacks=[callback, *extra])
            return model.predict(ids[:64], verbose=0)

        predictions = fit()
        with self.assertRaisesRegex(RuntimeError, "crash"):
            fit(keras.callbacks.BackupAndRestore(backup), Crash(epoch=0))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed = fit(keras.callbacks.BackupAndRestore(backup))
        said = [
            str(w.message) for w in caught if "MPECallback" in str(w.message)
        ]
        self.assertEqual([], said)
        testing_utils.assert_same_predictions(predictions, resumed)


def _rule_bits(layer):
    """Average bits per element of the selection rule's choice."""
    sizes = layer.group_sizes()
    return float(np.dot(layer.select_bits(), sizes) / sizes.sum())


class MetricDropTest(tf.test.TestCase):
    """`max_metric_drop`: the bit penalty's size, or the smallest larger
    size whose validation metric holds."""

    def _fit(self, monitor, drop):
        keras.utils.set_random_seed(0)
        ids, labels = testing_utils.zipf_ctr(rows=2000)
        train = testing_utils.dataset(ids[:1500], labels[:1500])
        valid = testing_utils.dataset(ids[1500:], labels[1500:])
        layer = keras_mpe.MixedPrecisionEmbedding(
            1000, 4, num_groups=8, bit_penalty=1e-2, temperature=0.01
        )
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        callback = keras_mpe.MPECallback(
            train,
            search_epochs=3,
            monitor=monitor,
            max_metric_drop=drop,
            validation_data=valid,
            verbose=0,
        )
        history = model.fit(
            train,
            validation_data=valid,
            epochs=4,
            verbose=0,
            callbacks=[callback],
        )
        return layer, callback, history.history[monitor]

    def test_measured_against_the_largest_size(self):
        for monitor, sign in (("val_auc", 1.0), ("val_loss", -1.0)):
            layer, callback, _ = self._fit(monitor, 0.01)
            trials = callback.budget_trials
            # The largest size (6 bits everywhere) first: the reference;
            # then the bit penalty's size (the selection rule's).
            largest, reference, _ = trials[0]
            self.assertEqual(6.0, largest)
            rule_bits = _rule_bits(layer)
            self.assertAllClose(rule_bits, trials[1][0])
            for _, value, held in trials:
                self.assertEqual(sign * (value - reference) >= -0.01, held)
            # No size below the rule's is tried.
            self.assertTrue(all(t[0] >= rule_bits - 1e-9 for t in trials))
            self.assertGreaterEqual(layer.average_bits(), rule_bits - 1e-9)
        # Any drop allowed: the rule's size, not the smallest one.
        loose, callback, _ = self._fit("val_auc", 1.0)
        self.assertLen(callback.budget_trials, 2)
        self.assertAllEqual(loose.select_bits(), loose.bits_per_group())
        self.assertGreater(loose.average_bits(), 0.0)

    def _select_with_scores(self, score):
        """The selection with `score(layer)` as the validation AUC of each
        size tried (model.evaluate replaced while it selects); returns the
        layer, the callback and the warnings' messages."""
        keras.utils.set_random_seed(0)
        data = testing_utils.dataset(*testing_utils.zipf_ctr(rows=600))
        layer = keras_mpe.MixedPrecisionEmbedding(
            1000, 4, num_groups=8, temperature=0.01
        )
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        callback = keras_mpe.MPECallback(
            data,
            search_epochs=2,
            monitor="val_auc",
            max_metric_drop=0.01,
            validation_data=data,
            verbose=0,
        )
        evaluate = model.evaluate

        class Scores(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2:  # runs just before the callback selects
                    model.evaluate = lambda *args, **kwargs: {
                        "auc": score(layer)
                    }

            def on_train_batch_begin(self, batch, logs=None):
                model.evaluate = evaluate

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(
                data,
                validation_data=data,
                epochs=3,
                verbose=0,
                callbacks=[Scores(), callback],
            )
        return layer, callback, [str(w.message) for w in caught]

    def test_the_penalty_size_when_it_holds(self):
        layer, callback, messages = self._select_with_scores(
            lambda layer: 0.7 - 0.01 * layer.average_bits()
        )
        # The largest size's score is the reference; the rule's size held:
        # it is kept, and nothing smaller is tried.
        self.assertEqual(6.0, callback.budget_trials[0][0])
        self.assertAllClose(0.64, callback.budget_trials[0][1])
        self.assertLen(callback.budget_trials, 2)
        self.assertTrue(callback.budget_trials[1][2])
        self.assertAllEqual(layer.select_bits(), layer.bits_per_group())
        self.assertLess(layer.average_bits(), 5.0)
        # It scored better than the largest by more than the drop: a
        # warning names both figures.
        better = [m for m in messages if "favour fewer bits" in m]
        self.assertLen(better, 1, messages)
        # It names the best size's figure against the largest size's.
        bits = layer.average_bits()
        self.assertIn(f"{0.7 - 0.01 * bits:.5f} at {bits:.3g} bits", better[0])
        self.assertIn("0.64000 at the largest size (6 bits", better[0])
        self.assertIn("max_metric_drop=0.01", better[0])

    def test_a_larger_size_when_the_penalty_size_fails(self):
        # Sizes more than half a bit per element above the rule's score
        # 0.7, the rest 0.6: the rule's size fails the drop of 0.01.
        def score(layer):
            above = layer.average_bits() > _rule_bits(layer) + 0.5
            return 0.7 if above else 0.6

        layer, callback, messages = self._select_with_scores(score)
        rule_bits = _rule_bits(layer)
        trials = callback.budget_trials
        self.assertFalse(trials[1][2], trials)  # the rule's size failed
        # The smallest size tried above it that held: every failed size is
        # smaller, and no size below the rule's was tried.
        self.assertGreater(layer.average_bits(), rule_bits + 0.5)
        chosen = min(level for level, _, ok in trials if ok)
        self.assertLessEqual(layer.average_bits(), chosen + 1e-9)
        failed = [level for level, _, ok in trials if not ok]
        self.assertTrue(all(level < chosen for level in failed), trials)
        self.assertTrue(all(t[0] >= rule_bits - 1e-9 for t in trials))
        # No smaller size scored better: no warning.
        self.assertFalse(
            [m for m in messages if "favour fewer bits" in m], messages
        )

    def test_budget_levels_golden(self):
        levels = keras_mpe.callback.budget_levels((0, 2, 6))
        self.assertEqual(0.0, levels[0])
        self.assertGreaterEqual(levels[1], 1 / 64)
        self.assertAllClose(
            [1.5, 3 / np.sqrt(2), 3.0, 6 / np.sqrt(2), 6.0], levels[-5:]
        )
        self.assertAllClose(
            [1.0, np.sqrt(2), 2.0], keras_mpe.callback.budget_levels((1, 2))
        )

    def test_bad_input(self):
        data = testing_utils.dataset(*testing_utils.zipf_ctr(rows=64))
        cases = [
            (dict(max_metric_drop=-0.1), "max_metric_drop=-0.1"),
            (dict(max_metric_drop="0.1"), "max_metric_drop='0.1'"),
            (dict(max_metric_drop=float("nan")), "max_metric_drop=nan"),
            (dict(max_metric_drop=0.1), "monitor=None"),
            (dict(max_metric_drop=0.1, monitor="auc"), "monitor='auc'"),
            (
                dict(max_metric_drop=0.1, monitor="val_auc"),
                "validation_data=None",
            ),
            (
                dict(
                    max_metric_drop=0.1,
                    monitor="val_auc",
                    validation_data=data,
                    target_bits=1.0,
                ),
                "both set the size",
            ),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                keras_mpe.MPECallback(data, **kwargs)


class BadInputTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        ids, labels = testing_utils.zipf_ctr(rows=64)
        self.data = testing_utils.dataset(ids, labels)

    def test_arguments(self):
        cases = [
            (dict(search_epochs=0), "search_epochs=0"),
            (
                dict(warmup_epochs=2, search_epochs=2),
                "from 0 to search_epochs - 1 = 1. .*warmup_epochs=2",
            ),
            (dict(selection="best"), "selection='best'"),
            (dict(mode="up"), "mode='up'"),
            (dict(target_bits=-1.0), "target_bits=-1.0"),
            (dict(target_bits=33), "target_bits=33"),
            (dict(target_bits="1"), "target_bits='1'"),
            (
                dict(target_bits=1.0, selection="argmax"),
                "selection='argmax'",
            ),
            (dict(rewind_network="no"), "True or False.*rewind_network='no'"),
            (dict(rewind_embeddings=1), "rewind_embeddings=1"),
            (dict(reset_optimizer=None), "reset_optimizer=None"),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                keras_mpe.MPECallback(self.data, **kwargs)
        with self.assertRaisesRegex(ValueError, "frequency_data=None"):
            keras_mpe.MPECallback(None)

    def test_model_without_layer(self):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile("adam", "mse")
        data = tf.data.Dataset.from_tensor_slices(
            (np.ones((8, 4)), np.ones(8))
        ).batch(4)
        with self.assertRaisesRegex(ValueError, "has no MixedPrecision"):
            model.fit(
                data,
                epochs=3,
                verbose=0,
                callbacks=[keras_mpe.MPECallback(data, 1)],
            )

    def _fit(self, callback, epochs=3, data=None):
        layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        model.fit(
            data or self.data, epochs=epochs, verbose=0, callbacks=[callback]
        )

    def test_search_epochs_leave_no_retraining(self):
        with self.assertRaisesRegex(
            ValueError,
            "search_epochs=3` leaves no retraining in "
            r"`fit\(epochs=3\)",
        ):
            self._fit(keras_mpe.MPECallback(self.data, search_epochs=3))

    def test_target_below_the_smallest_candidate(self):
        layer = keras_mpe.MixedPrecisionEmbedding(
            1000, 4, bit_candidates=(1, 2, 4), num_groups=4
        )
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        callback = keras_mpe.MPECallback(
            self.data, search_epochs=1, target_bits=0.5, verbose=0
        )
        with self.assertRaisesRegex(
            ValueError, r"target_bits=0.5` is below .*\(1, 2, 4\)"
        ):
            model.fit(self.data, epochs=2, verbose=0, callbacks=[callback])
        self.assertFalse(layer.has_frequencies)  # refused before counting

    def test_empty_frequency_data(self):
        empty = self.data.take(0)
        with self.assertRaisesRegex(ValueError, "yielded no ids"):
            self._fit(keras_mpe.MPECallback(empty, search_epochs=1))

    def test_monitor_missing_from_logs(self):
        callback = keras_mpe.MPECallback(
            self.data, search_epochs=2, warmup_epochs=0, monitor="val_auc"
        )
        with self.assertRaisesRegex(ValueError, "monitor='val_auc'"):
            self._fit(callback)


class MirroredStrategyTest(tf.test.TestCase):
    def test_replicas_agree(self):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        ids, labels = testing_utils.zipf_ctr(rows=2000)
        data = testing_utils.dataset(ids, labels)
        with strategy.scope():
            layer = keras_mpe.MixedPrecisionEmbedding(
                1000, 4, num_groups=8, bit_penalty=3e-3
            )
            model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
        callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
        model.fit(data, epochs=3, verbose=0, callbacks=[callback])
        self.assertEqual(Phase.FIXED, layer.phase)
        for weight in (
            layer._group_counts,
            layer._group_ids,
            layer._chosen_bits,
            layer._precision_logits,
            layer._embeddings,
        ):
            replicas = _compat.tf_variable(weight).values
            self.assertLen(replicas, 2)
            self.assertAllEqual(replicas[0].numpy(), replicas[1].numpy())
        testing_utils.assert_counted(
            layer, np.bincount(ids.ravel(), minlength=1000)
        )
