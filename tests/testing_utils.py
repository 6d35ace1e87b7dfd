"""Helpers shared by the tests: reference math in numpy, data, models."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import keras_mpe
from keras_mpe import _compat
from keras_mpe import frequency

keras = _compat.keras

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

needs_legacy_keras = pytest.mark.skipif(
    _compat.IS_KERAS_3, reason="needs TF_USE_LEGACY_KERAS=1 (tf_keras, TFRS)"
)


def shared_file(*parts):
    """A file under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def assert_same_predictions(expected, actual):
    """Whole-model outputs computed by different kernels or graphs agree.

    oneDNN may order float sums differently from one CPU to another and
    between a Keras model and its SavedModel (1.2e-7 measured on an AMD
    EPYC), so whole models are compared with a tolerance; a layer's own
    outputs before and after conversion stay compared exactly.
    """
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=1e-6, atol=1e-6
    )


def assert_counted(layer, counts):
    """The layer's groups and per-group counts are those of `counts` (the
    ids' true counts per row)."""
    expected = frequency.group_by_frequency(counts, layer.num_groups)
    np.testing.assert_array_equal(expected.group_ids, layer._group_ids.numpy())
    np.testing.assert_array_equal(
        expected.group_counts, layer.group_summary().count
    )


def quantize_np(values, step, offset, bits):
    """Reference fake quantization in numpy (round half to even)."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    step = abs(step) + 1e-10
    return np.clip(np.round((values - offset) / step), lo, hi) * step + offset


def zipf_ctr(rows=8000, vocab=1000, fields=4, informative=100, seed=0):
    """CTR data whose ids are Zipf-distributed and whose rare ids are noise.

    Only the `informative` most frequent ids (the lowest ids) move the
    label; every other id carries no signal.
    """
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, size=(rows, fields)) - 1, vocab - 1)
    weights = rng.normal(size=vocab) * 1.5
    weights[informative:] = 0.0
    logits = weights[ids].sum(axis=1) - 0.5
    labels = rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))
    return ids.astype(np.int32), labels.astype(np.float32)


def dataset(ids, labels, batch_size=256):
    return tf.data.Dataset.from_tensor_slices((ids, labels)).batch(batch_size)


def ctr_model(layer, fields=4, batch_norm=False):
    """A functional CTR model around one MixedPrecisionEmbedding (with
    BatchNormalization after its hidden layer if `batch_norm`)."""
    inputs = keras.Input((fields,), dtype="int32")
    x = keras.layers.Flatten()(layer(inputs))
    x = keras.layers.Dense(16, activation="relu")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def compile_ctr(model, learning_rate=1e-2, **kwargs):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        "binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
        **kwargs,
    )
    return model


def train_searched(
    bit_penalty=3e-3, epochs=4, search_epochs=3, seed=0, **layer_kwargs
):
    """Trains the CTR model on `zipf_ctr` data with the callback."""
    keras.utils.set_random_seed(seed)
    ids, labels = zipf_ctr(seed=seed)
    data = dataset(ids, labels)
    layer = keras_mpe.MixedPrecisionEmbedding(
        1000, 8, num_groups=8, bit_penalty=bit_penalty, **layer_kwargs
    )
    model = compile_ctr(ctr_model(layer))
    callback = keras_mpe.MPECallback(
        data, search_epochs=search_epochs, verbose=0
    )
    history = model.fit(data, epochs=epochs, callbacks=[callback], verbose=0)
    return model, layer, history, data


def layer_weight(layer, name):
    """The weight of `layer` called `name` ("quantizer_scale", ...).

    Tests read a layer's stored state through this, by the weight's name,
    rather than through private attributes.
    """
    for weight in layer.weights:
        # "embeddings" in Keras 3, "<layer>/embeddings:0" in tf_keras.
        if weight.name.split("/")[-1].split(":")[0] == name:
            return weight
    names = [weight.name for weight in layer.weights]
    raise KeyError(f"Layer '{layer.name}' has no weight {name!r}: {names}")


def assert_same_layer_state(layer, other):
    """Equal phase and equal weights (table, groups, logits, bits...)."""
    assert layer.phase == other.phase, (layer.phase, other.phase)
    for mine, theirs in zip(layer.weights, other.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
