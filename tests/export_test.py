"""convert + export_saved_model, checked the way TF Serving would load it."""

import importlib.util
import json
import os

import numpy as np
import pytest
import serving
import tensorflow as tf
import testing_utils
from tensorflow.python.framework import op_def_registry

import keras_mpe
from keras_mpe import _compat
from keras_mpe.fixed_bit import FixedBitEmbedding

keras = _compat.keras
IDS = np.random.default_rng(0).integers(0, 500, (8, 3)).astype(np.int32)


def fixed_mpe(name=None, ordered=True):
    """Groups of 100 rows at 0, 1, 3, 5, 6 bits; ids frequency ordered
    (a "segments" index) or shuffled (a "ranks" index)."""
    layer = keras_mpe.MixedPrecisionEmbedding(
        500, 8, num_groups=5, bit_penalty=0.0, name=name
    )
    counts = np.arange(500)[::-1]
    if not ordered:
        counts = np.random.default_rng(1).permutation(counts)
    layer.set_frequencies(counts)
    layer.fix_bits([0, 1, 3, 5, 6])
    return layer


def functional(ordered=True):
    inputs = keras.Input((3,), dtype="int32", name="ids")
    x = keras.layers.Flatten()(fixed_mpe(ordered=ordered)(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.user = fixed_mpe("user")
        self.head = keras.layers.Dense(1)

    def call(self, features):
        return self.head(tf.reduce_sum(self.user(features["ids"]), axis=1))


def _float_tables(model):
    return [w for w in model.weights if tuple(w.shape) == (500, 8)]


class ConvertTest(tf.test.TestCase):
    def test_functional_and_sequential(self):
        sequential = keras.Sequential(
            [
                keras.Input((3,), dtype="int32"),
                fixed_mpe(),
                keras.layers.Flatten(),
                keras.layers.Dense(1),
            ]
        )
        for model in (functional(), sequential):
            expected = model.predict(IDS, verbose=0)
            served = keras_mpe.convert(model)
            self.assertIsNot(model, served)
            testing_utils.assert_same_predictions(
                expected, served.predict(IDS, verbose=0)
            )
            self.assertEmpty(_float_tables(served))
            self.assertLen(
                [x for x in served.layers if isinstance(x, FixedBitEmbedding)],
                1,
            )

    def test_subclassed_in_place(self):
        model = Subclassed()
        expected = model({"ids": IDS})
        served = keras_mpe.convert(model)
        self.assertIs(model, served)
        self.assertIsInstance(model.user, FixedBitEmbedding)
        testing_utils.assert_same_predictions(expected, served({"ids": IDS}))
        self.assertEmpty(_float_tables(served))

    def test_bad_input(self):
        inputs = keras.Input((3,), dtype="int32")
        searching = keras_mpe.MixedPrecisionEmbedding(500, 8, num_groups=5)
        model = keras.Model(inputs, searching(inputs))
        with self.assertRaisesRegex(ValueError, r"never searched: .*FLOAT"):
            keras_mpe.convert(model)
        plain = keras.Model(inputs, keras.layers.Embedding(5, 2)(inputs))
        with self.assertRaisesRegex(ValueError, "has no MixedPrecision"):
            keras_mpe.convert(plain)


class ReportTest(tf.test.TestCase):
    def test_report(self):
        model = functional()
        served = keras_mpe.convert(model)
        labels = (IDS[:, :1] % 2).astype(np.float32)
        data = tf.data.Dataset.from_tensor_slices((IDS, labels)).batch(4)
        report = keras_mpe.compression_report(
            served, model, data, keras.metrics.AUC(name="auc")
        )
        (layer,) = report.layers
        self.assertEqual(
            {0: 100, 1: 100, 3: 100, 5: 100, 6: 100}, layer.rows_per_bits
        )
        self.assertEqual(100 * 8 * (1 + 3 + 5 + 6), layer.payload_bits)
        self.assertEqual(500 * 8 * 4, layer.float32_bytes)
        self.assertAllClose(32 * 5 / 15, layer.payload_compression)
        # Codes + 5 segments x 12 bytes + steps and offset (8 + 8 floats).
        self.assertEqual(1500 + 5 * 12 + 16 * 4, layer.real_bytes)
        self.assertEqual([0, 1, 3, 5, 6], layer.groups["bits"])
        self.assertEqual(report.metric_before, report.metric_after)
        as_dict = report.as_dict()
        self.assertEqual("auc", as_dict["metric"]["name"])
        self.assertIn(layer.name, str(report))
        with self.assertRaisesRegex(ValueError, "no FixedBitEmbedding"):
            keras_mpe.compression_report(model)
        with self.assertRaisesRegex(ValueError, "needs original_model"):
            keras_mpe.compression_report(served, data=data)

    def test_plot(self):
        pytest.importorskip("matplotlib")
        report = keras_mpe.compression_report(keras_mpe.convert(functional()))
        path = os.path.join(self.get_temp_dir(), "bits.png")
        figure = report.plot(path)
        with open(path, "rb") as png:
            self.assertEqual(b"\x89PNG", png.read(4))
        (axes,) = figure.axes
        (line,) = axes.get_lines()
        self.assertEqual([0, 1, 3, 5, 6], list(line.get_ydata()))
        # Lookups per row of the five groups of 100 ids (counts 499..0).
        rows = np.arange(500)[::-1].reshape(5, 100)[::-1]
        expected = rows.sum(axis=1) / 100
        self.assertAllClose(expected, line.get_xdata())
        self.assertEqual("log", axes.get_xscale())


def _signature(path):
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    return loaded, signature, inputs, outputs


class ExportTest(tf.test.TestCase):
    ordered = True
    index = "segments"
    layout = "packed"
    # 100 rows each at 0, 1, 3, 5, 6 bits, 8 codes per row, packed.
    payload_bytes = 100 * 8 * (1 + 3 + 5 + 6) // 8
    index_bytes = 0  # a few segments or bit-planes: in the 4 KB margin

    def setUp(self):
        super().setUp()
        self.model = functional(self.ordered)
        self.expected = self.model.predict(IDS, verbose=0)
        self.served = keras_mpe.convert(self.model, layout=self.layout)
        self.path = os.path.join(self.get_temp_dir(), "ctr", "1")
        keras_mpe.export_saved_model(self.served, self.path)

    def test_signature_and_predictions(self):
        _, signature, inputs, outputs = _signature(self.path)
        self.assertEqual(["ids"], list(inputs))
        self.assertEqual(tf.int32, inputs["ids"].dtype)
        result = signature(ids=tf.constant(IDS))["outputs"]
        testing_utils.assert_same_predictions(self.expected, result)
        self.assertIn("outputs", outputs)

    def test_only_core_ops(self):
        meta = serving.meta_graph(self.path)
        ops = {node.op for node in meta.graph_def.node}
        for function in meta.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
        functions = {f.signature.name for f in meta.graph_def.library.function}
        ops -= functions
        self.assertNotIn("PyFunc", ops)
        self.assertNotIn("EagerPyFunc", ops)
        for op in sorted(ops):
            self.assertIsNotNone(op_def_registry.get(op), op)
        self.assertEqual(
            "tensorflow/serving/predict",
            meta.signature_def["serving_default"].method_name,
        )

    def test_variables_hold_the_packed_table(self):
        fixed = [
            x for x in self.served.layers if isinstance(x, FixedBitEmbedding)
        ][0]
        self.assertEqual(self.index, fixed.index)
        folder = os.path.join(self.path, "variables")
        size = sum(
            os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
        )
        payload = fixed.num_bytes
        self.assertEqual(self.payload_bytes, payload)
        # Codes, index, the dense head, metadata, checkpoint index.
        stored = payload + self.index_bytes
        self.assertBetween(size, stored, stored + 4096)

    def test_fresh_process_without_keras_mpe(self):
        outputs = serving.predict_in_fresh_process(
            self.path, {"ids": IDS}, self.get_temp_dir()
        )
        testing_utils.assert_same_predictions(self.expected, outputs)

    def test_cpp_loader(self):
        outputs = serving.predict_with_cpp_loader(
            self.path, {"ids": IDS}, self.get_temp_dir()
        )
        testing_utils.assert_same_predictions(self.expected, outputs)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "exists and is not empty"):
            keras_mpe.export_saved_model(self.served, self.path)
        keras_mpe.export_saved_model(self.served, self.path, overwrite=True)
        with self.assertRaisesRegex(ValueError, "still holds MixedPrecision"):
            keras_mpe.export_saved_model(functional(), self.path + "x")
        with self.assertRaisesRegex(ValueError, "pass signature="):
            keras_mpe.export_saved_model(
                keras_mpe.convert(Subclassed()), self.path + "y"
            )

    def test_out_of_range_ids_fail_in_every_loader(self):
        _, signature, _, _ = _signature(self.path)
        for bad in (500, -1):
            ids = IDS.copy()
            ids[1, 2] = bad
            with self.assertRaisesRegex(
                tf.errors.InvalidArgumentError,
                r"FixedBitEmbedding .*: every id must be in "
                r"\[0, input_dim=500\)",
            ):
                signature(ids=tf.constant(ids))
            for predict in (
                serving.predict_in_fresh_process,
                serving.predict_with_cpp_loader,
            ):
                with self.assertRaisesRegex(RuntimeError, "input_dim=500"):
                    predict(self.path, {"ids": ids}, self.get_temp_dir())


def with_batch_norm(dropout):
    """A converted CTR model with BatchNormalization (and Dropout) whose
    moving statistics are far from any batch's, so that training-mode
    outputs (batch statistics, dropped units) differ from inference."""
    inputs = keras.Input((3,), dtype="int32", name="ids")
    x = keras.layers.Flatten()(fixed_mpe()(inputs))
    x = keras.layers.Dense(8)(x)
    norm = keras.layers.BatchNormalization()
    x = norm(x)
    if dropout:
        x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    # gamma, beta, moving mean, moving variance.
    norm.set_weights(
        [np.ones(8), np.zeros(8), np.full(8, 0.5), np.full(8, 4.0)]
    )
    return keras_mpe.convert(keras.Model(inputs, outputs))


class ExportInferenceTest(tf.test.TestCase):
    def test_batch_norm_and_dropout_serve_in_inference_mode(self):
        for dropout in (False, True):
            model = with_batch_norm(dropout)
            expected = model.predict(IDS, verbose=0)
            path = keras_mpe.export_saved_model(
                model, os.path.join(self.get_temp_dir(), str(dropout), "1")
            )
            _, signature, _, _ = _signature(path)
            served = signature(ids=tf.constant(IDS))["outputs"]
            testing_utils.assert_same_predictions(expected, served)
            # Training mode is far off. Checked last: it moves the
            # moving statistics.
            training = model(IDS, training=True)
            self.assertGreater(np.abs(training - expected).max(), 0.05)


def with_lookup(vocabulary, dtype):
    """Raw features -> StringLookup / IntegerLookup -> a FIXED table."""
    if dtype == "string":
        lookup = keras.layers.StringLookup(vocabulary=vocabulary)
    else:
        lookup = keras.layers.IntegerLookup(vocabulary=vocabulary)
    layer = keras_mpe.MixedPrecisionEmbedding(
        len(vocabulary) + 1, 4, num_groups=2, bit_penalty=0.0
    )
    layer.set_frequencies(np.arange(len(vocabulary) + 1)[::-1])
    layer.fix_bits([1, 4])
    inputs = keras.Input((3,), dtype=dtype, name="raw")
    x = keras.layers.Flatten()(layer(lookup(inputs)))
    return keras.Model(inputs, keras.layers.Dense(1)(x))


class ExportLookupTest(tf.test.TestCase):
    """Models that look raw features up serve them: the lookup tables
    are in the SavedModel, for every loader."""

    def test_string_and_integer_lookups(self):
        cases = [
            (["a", "b", "c"], "string", np.array([["a", "c", "zz"]] * 2)),
            ([10, 20, 30], "int64", np.array([[30, 10, 99]] * 2)),
        ]
        for vocabulary, dtype, raw in cases:
            model = with_lookup(vocabulary, dtype)
            expected = model.predict(tf.constant(raw), verbose=0)
            path = os.path.join(self.get_temp_dir(), dtype, "1")
            keras_mpe.export_saved_model(keras_mpe.convert(model), path)
            for predict in (
                serving.predict_in_fresh_process,
                serving.predict_with_cpp_loader,
            ):
                outputs = predict(path, {"raw": raw}, self.get_temp_dir())
                testing_utils.assert_same_predictions(expected, outputs)

    def test_hashing_and_discretization(self):
        layer = keras_mpe.MixedPrecisionEmbedding(
            16, 4, num_groups=2, bit_penalty=0.0
        )
        layer.set_frequencies(np.arange(16)[::-1])
        layer.fix_bits([1, 4])
        raw = keras.Input((3,), dtype="string", name="raw")
        price = keras.Input((1,), dtype="float32", name="price")
        hashed = layer(keras.layers.Hashing(num_bins=16)(raw))
        buckets = keras.layers.Discretization(bin_boundaries=[0.0, 1.0])(price)
        x = keras.layers.Concatenate()(
            [
                keras.layers.Flatten()(hashed),
                keras.layers.Flatten()(keras.layers.Embedding(3, 2)(buckets)),
            ]
        )
        model = keras.Model([raw, price], keras.layers.Dense(1)(x))
        feeds = {
            "raw": np.array([["a", "b", "zz"], ["c", "a", "a"]]),
            "price": np.array([[0.5], [20.0]], np.float32),
        }
        expected = model.predict(
            {k: tf.constant(v) for k, v in feeds.items()}, verbose=0
        )
        path = os.path.join(self.get_temp_dir(), "hashed", "1")
        keras_mpe.export_saved_model(keras_mpe.convert(model), path)
        for predict in (
            serving.predict_in_fresh_process,
            serving.predict_with_cpp_loader,
        ):
            outputs = predict(path, feeds, self.get_temp_dir())
            testing_utils.assert_same_predictions(expected, outputs)

    def test_subclassed_model_signature_from_its_first_call(self):
        model = keras_mpe.convert(Subclassed())
        expected = model({"ids": IDS})
        path = os.path.join(self.get_temp_dir(), "sub", "1")
        if _compat.IS_KERAS_3:
            with self.assertRaisesRegex(ValueError, "not its dtypes"):
                keras_mpe.export_saved_model(model, path)
            return
        keras_mpe.export_saved_model(model, path)
        _, signature, inputs, _ = _signature(path)
        self.assertEqual(
            {"ids": tf.int32}, {k: v.dtype for k, v in inputs.items()}
        )
        testing_utils.assert_same_predictions(
            expected, signature(ids=tf.constant(IDS))["outputs"]
        )

    def test_overwrite_replaces_the_folder(self):
        path = os.path.join(self.get_temp_dir(), "old", "1")
        os.makedirs(path)
        stale = os.path.join(path, "stale.txt")
        with open(stale, "w") as f:
            f.write("from an earlier export")
        served = keras_mpe.convert(functional())
        keras_mpe.export_saved_model(served, path, overwrite=True)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(os.path.join(path, "saved_model.pb")))


class ExportShuffledIdsTest(ExportTest):
    """The same checks with ids in no frequency order: the rank index."""

    ordered = False
    index = "ranks"


class ExportBytesLayoutTest(ExportTest):
    """The same checks for the speed-first layout: a byte per code."""

    ordered = False
    index = "direct"
    layout = "bytes"
    payload_bytes = 4 * 100 * 8  # the 400 kept rows, a byte per code
    index_bytes = 4 * 500  # an int32 per id


@pytest.mark.parametrize("jit_compile", [True])
def test_fake_quant_and_xla_export(tmp_path, jit_compile):
    model = functional()
    path = keras_mpe.export_saved_model(
        model,
        str(tmp_path / "1"),
        allow_fake_quant=True,
        jit_compile=jit_compile,
    )
    loaded = tf.saved_model.load(path)
    result = loaded.signatures["serving_default"](ids=tf.constant(IDS))
    np.testing.assert_allclose(
        model.predict(IDS, verbose=0), result["outputs"], atol=1e-6
    )


def _serving_client():
    """examples/serving_client.py, the client a TF Serving user runs."""
    path = os.path.join(os.path.dirname(serving.HERE), "examples")
    spec = importlib.util.spec_from_file_location(
        "serving_client", os.path.join(path, "serving_client.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ServingApiTest(tf.test.TestCase):
    """examples/serving_client.py against a stand-in model server over
    local sockets: gRPC PredictRequest/PredictResponse (tensorflow-serving-
    api) and the REST JSON bodies, as TF Serving answers them."""

    def setUp(self):
        super().setUp()
        self.client = _serving_client()
        self.model = functional()
        self.expected = self.model.predict(IDS, verbose=0)
        self.path = keras_mpe.export_saved_model(
            keras_mpe.convert(self.model),
            os.path.join(self.get_temp_dir(), "ctr", "1"),
        )

    def test_client_builds_inputs_from_the_signature(self):
        spec = self.client.input_spec(self.path)
        self.assertEqual({"ids": (np.dtype("int32"), [None, 3])}, spec)
        batch = self.client.example_inputs(spec, batch_size=5)
        self.assertEqual((5, 3), batch["ids"].shape)
        self.assertEqual(np.int32, batch["ids"].dtype)
        body = json.loads(self.client.rest_body(batch))
        self.assertEqual(batch["ids"][2].tolist(), body["instances"][2]["ids"])
        columnar = json.loads(self.client.rest_body(batch, row_format=False))
        self.assertEqual(batch["ids"].tolist(), columnar["inputs"]["ids"])

    def test_grpc_and_rest_predictions(self):
        inputs = {"ids": IDS}
        with serving.model_server(self.path, "ctr") as (grpc_address, url):
            by_grpc = self.client.predict_grpc(grpc_address, "ctr", inputs)
            by_rows = self.client.predict_rest(url, "ctr", inputs)
            by_columns = self.client.predict_rest(
                url, "ctr", inputs, row_format=False
            )
            with self.assertRaisesRegex(Exception, "404"):
                self.client.predict_rest(url, "other", inputs)
        testing_utils.assert_same_predictions(self.expected, by_grpc["outputs"])
        # One served computation; JSON carries float32 values exactly
        # (shortest repr round trip).
        self.assertAllEqual(by_grpc["outputs"], np.float32(by_rows))
        self.assertAllEqual(by_grpc["outputs"], np.float32(by_columns))


class EndToEndTest(tf.test.TestCase):
    def test_trained_dnn_served_by_both_loaders(self):
        model, layer, _, data = testing_utils.train_searched(
            bit_penalty=3e-2, epochs=4, search_epochs=3
        )
        ids = np.concatenate([x.numpy() for x, _ in data.take(2)])
        expected = model.predict(ids, verbose=0)
        served = keras_mpe.convert(model)
        self.assertAllClose(expected, served.predict(ids, verbose=0), atol=1e-6)
        path = keras_mpe.export_saved_model(
            served, os.path.join(self.get_temp_dir(), "dnn", "1")
        )
        name = list(keras_mpe.export.input_signature(served))[0]
        folder = self.get_temp_dir()
        for predict in (
            serving.predict_in_fresh_process,
            serving.predict_with_cpp_loader,
        ):
            self.assertAllClose(
                expected, predict(path, {name: ids}, folder), atol=1e-6
            )
