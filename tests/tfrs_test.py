"""The TensorFlow Recommenders ranking model of examples/tfrs_movielens.py
with MixedPrecisionEmbedding tables."""

import functools

import numpy as np
import pytest
import serving
import tensorflow as tf
import testing_utils

import keras_mpe

keras = tf.keras
pytestmark = testing_utils.needs_legacy_keras
USERS, ITEMS = 943, 1682  # MovieLens 100K


def movielens_like(rows=60000, factors=4, seed=0):
    """Ratings 1..5 from latent factors, Zipf-distributed users and items."""
    rng = np.random.default_rng(seed)
    users = np.minimum(rng.zipf(1.2, rows) - 1, USERS - 1)
    items = np.minimum(rng.zipf(1.15, rows) - 1, ITEMS - 1)
    user_f = rng.normal(size=(USERS, factors)) * 0.6
    item_f = rng.normal(size=(ITEMS, factors)) * 0.6
    ratings = 3.5 + (user_f[users] * item_f[items]).sum(axis=1)
    ratings += rng.normal(size=USERS)[users] * 0.4
    ratings += rng.normal(size=ITEMS)[items] * 0.4
    ratings += rng.normal(size=rows) * 0.7
    return {
        "user_id": users.astype(np.int32),
        "movie_id": items.astype(np.int32),
        "rating": np.clip(ratings, 1, 5).astype(np.float32),
    }


def ranking_model(make_embedding):
    """The example's model with one hidden layer of 64, Adam 1e-2."""
    # Imported here: TFRS refuses to load under Keras 3, where this
    # module is still collected (and skipped).
    from examples import tfrs_movielens

    sizes = {"user_id": USERS, "movie_id": ITEMS}
    model = tfrs_movielens.RankingModel(
        make_embedding, sizes, hidden_units=(64,)
    )
    model.compile(keras.optimizers.Adam(1e-2))
    return model


def train_and_test(make_embedding, data, epochs, callback=None):
    keras.utils.set_random_seed(0)
    rows = len(data["rating"])
    cut = int(rows * 0.8)

    def batches(part):
        sliced = {k: v[part] for k, v in data.items()}
        return tf.data.Dataset.from_tensor_slices(sliced).batch(512)

    train, test = batches(slice(0, cut)), batches(slice(cut, None))
    model = ranking_model(make_embedding)
    callbacks = [callback(train)] if callback else []
    history = model.fit(train, epochs=epochs, verbose=0, callbacks=callbacks)
    rmse = model.evaluate(test, return_dict=True, verbose=0)["rmse"]
    return model, history.history, rmse


def train_mpe(data, epochs, search_epochs, warmup_epochs=None, **layer_args):
    """Trains the ranking model with MPE tables and the callback."""
    return train_and_test(
        lambda rows: keras_mpe.MixedPrecisionEmbedding(
            rows, 16, num_groups=32, bit_penalty=1e-3, **layer_args
        ),
        data,
        epochs=epochs,
        callback=lambda train: keras_mpe.MPECallback(
            train, search_epochs, warmup_epochs=warmup_epochs, verbose=0
        ),
    )


@functools.cache
def synthetic_run(temperature=None, warmup_epochs=None):
    """8 epochs (4 searching) on `movielens_like()`; None: the defaults."""
    layer_args = {} if temperature is None else {"temperature": temperature}
    return train_mpe(movielens_like(), 8, 4, warmup_epochs, **layer_args)


@pytest.mark.slow
def test_default_settings_stay_close_to_float():
    _, _, float_rmse = train_and_test(
        lambda rows: keras.layers.Embedding(rows, 16), movielens_like(), 8
    )
    model, history, mpe_rmse = synthetic_run()
    assert mpe_rmse < 1.03 * float_rmse, (mpe_rmse, float_rmse)
    # It compressed: every table below 6 bits on average, phases ran, and
    # TFRS added the bit penalty to the loss only while searching.
    assert history["mpe_phase"] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert history["mpe_bits"][-1] < 5.0
    penalty = history["regularization_loss"]
    assert penalty[0] == 0 and min(penalty[1:4]) > 0
    assert max(penalty[4:]) == 0
    for layer in (model.user_embedding, model.movie_embedding):
        bits = layer.bits_per_group()
        assert bits[:8].mean() + 1.0 < bits[-8:].mean()


@pytest.mark.slow
def test_reference_settings_collapse_where_defaults_do_not():
    """Temperature 3e-3 and no warm-up lock the tables onto ~1 bit."""
    _, reference, reference_rmse = synthetic_run(3e-3, warmup_epochs=0)
    _, default, default_rmse = synthetic_run()
    assert reference["mpe_bits"][-1] < 1.5 < default["mpe_bits"][-1]
    assert default_rmse * 1.02 < reference_rmse, (default_rmse, reference_rmse)


def test_real_movielens_counts(tmp_path):
    """The real MovieLens 100K sample (skipped where ../shared is absent)."""
    path = testing_utils.shared_file("movielens", "ml-100k", "u.data")
    table = np.loadtxt(path, dtype=np.int64)
    data = {
        "user_id": (table[:, 0] - 1).astype(np.int32),
        "movie_id": (table[:, 1] - 1).astype(np.int32),
        "rating": table[:, 2].astype(np.float32),
    }
    model, history, rmse = train_mpe(data, epochs=2, search_epochs=1)
    cut = int(len(table) * 0.8)
    expected = np.bincount(data["movie_id"][:cut], minlength=ITEMS)
    testing_utils.assert_counted(model.movie_embedding, expected)
    assert history["mpe_phase"] == [1, 2]
    assert rmse < 1.2


def test_trained_tfrs_model_served_by_both_loaders(tmp_path):
    model, _, _ = train_mpe(movielens_like(rows=20000), 2, 1)
    features = {
        "user_id": np.arange(0, 900, 7, dtype=np.int32),
        "movie_id": np.arange(0, 1290, 10, dtype=np.int32),
    }
    expected = model(features).numpy()
    served = keras_mpe.convert(model)
    assert isinstance(served.user_embedding, keras_mpe.FixedBitEmbedding)
    np.testing.assert_allclose(expected, served(features), atol=1e-6)
    signature = {
        name: tf.TensorSpec([None], tf.int32, name=name) for name in features
    }
    path = keras_mpe.export_saved_model(
        served, str(tmp_path / "ranking" / "1"), signature=signature
    )
    for predict in (
        serving.predict_in_fresh_process,
        serving.predict_with_cpp_loader,
    ):
        np.testing.assert_allclose(
            expected, predict(path, features, str(tmp_path)), atol=1e-6
        )
