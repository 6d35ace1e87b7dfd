"""Mixed precision policies: float32 variables, outputs in the policy's
dtype, finite losses in every phase, conversion and export."""

import os

import numpy as np
import pytest
import tensorflow as tf
import testing_utils

import keras_mpe
from keras_mpe import _compat

keras = _compat.keras


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def test_search_retrain_convert_export(policy, tmp_path):
    keras.utils.set_random_seed(0)
    ids, labels = testing_utils.zipf_ctr(rows=1000)
    data = testing_utils.dataset(ids, labels)
    layer = keras_mpe.MixedPrecisionEmbedding(1000, 4, num_groups=4)
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Flatten()(layer(inputs))
    x = keras.layers.Dense(8, activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    model = testing_utils.compile_ctr(keras.Model(inputs, outputs))
    callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
    history = model.fit(data, epochs=3, verbose=0, callbacks=[callback])

    compute = keras.mixed_precision.Policy(policy).compute_dtype
    assert {w.dtype for w in layer.trainable_weights} == {"float32"} or {
        getattr(w.dtype, "name", w.dtype) for w in layer.trainable_weights
    } == {"float32"}
    assert tf.as_dtype(layer(ids[:2]).dtype).name == compute
    assert history.history["mpe_phase"] == [0, 1, 2]
    assert np.isfinite(history.history["loss"]).all(), history.history
    # Retraining moved the table: learning rates and loss scale survived
    # the optimizer reset at selection.
    table = layer.embeddings.numpy().copy()
    model.fit(data, epochs=1, verbose=0)
    assert np.abs(layer.embeddings.numpy() - table).max() > 0
    expected = model.predict(ids[:64], verbose=0)
    assert np.isfinite(expected).all()

    served = keras_mpe.convert(model)
    testing_utils.assert_same_predictions(
        expected, served.predict(ids[:64], verbose=0)
    )
    path = keras_mpe.export_saved_model(served, os.fspath(tmp_path / "1"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    name = list(keras_mpe.export.input_signature(served))[0]
    served_outputs = serve(**{name: tf.constant(ids[:64])})["outputs"]
    testing_utils.assert_same_predictions(expected, served_outputs)
