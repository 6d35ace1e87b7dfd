"""Checks of training under ParameterServerStrategy, run in a fresh
process by `distribute_test.py` (the in-process cluster's servers live as
long as the process).

    python tests/parameter_server_check.py refuse   # Keras 3
    TF_USE_LEGACY_KERAS=1 python tests/parameter_server_check.py train DIR

Prints "all checks passed" last.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples")]

import distributed_ps  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import testing_utils  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import _compat  # noqa: E402
from keras_mpe import frequency  # noqa: E402

ROWS = 1000


def strategy():
    resolver = distributed_ps.in_process_cluster(workers=2, ps=2)
    # 2 shards of every per-row variable (the int8 group ids: 500 bytes).
    return distributed_ps.parameter_server_strategy(resolver, 2, 256)


def ctr_model(scope):
    with scope:
        layer = keras_mpe.MixedPrecisionEmbedding(
            ROWS, 4, num_groups=8, bit_penalty=3e-3, seed=1
        )
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
    return layer, model


def refuse():
    _, model = ctr_model(strategy().scope())
    ids, labels = testing_utils.zipf_ctr(rows=256, vocab=ROWS)
    try:
        keras_mpe.MPECallback(testing_utils.dataset(ids, labels)).set_model(
            model
        )
    except ValueError as error:
        print("refused:", error)
        return
    raise AssertionError("MPECallback accepted ParameterServerStrategy")


def train(folder):
    def on_the_coordinator(*args, **kwargs):
        raise AssertionError("counted on the coordinator")

    frequency._count_here = on_the_coordinator
    # The cluster first: tensors made before it live on a device that
    # the cluster's eager context no longer knows.
    scope = strategy().scope()
    ids, labels = testing_utils.zipf_ctr(rows=2000, vocab=ROWS)
    data = testing_utils.dataset(ids, labels)
    layer, model = ctr_model(scope)
    shards = [v.shape[0] for v in layer.embeddings.variables]
    group_shards = _compat.tf_variable(layer._group_ids).variables
    assert shards == [500, 500] and len(group_shards) == 2, shards
    # Lookups in id order across the shards.
    table = _compat.read_rows(layer.embeddings, 0, ROWS)
    wanted = np.array([[600, 0, 999, 499, 500]])
    np.testing.assert_array_equal(table[wanted[0]], layer(wanted)[0].numpy())
    assert _compat.worker_count(model.distribute_strategy) == 2
    try:
        frequency.count_ids(model, [layer], list(data))
        raise AssertionError("counted batches that are not a dataset")
    except ValueError as error:
        assert "must be a tf.data.Dataset under Parameter" in str(error)
    callback = keras_mpe.MPECallback(data, search_epochs=2, verbose=0)
    model.fit(data.repeat(), epochs=3, steps_per_epoch=8, verbose=0,
              callbacks=[callback])  # fmt: skip
    assert layer.phase == keras_mpe.Phase.FIXED
    testing_utils.assert_counted(
        layer, np.bincount(ids.ravel(), minlength=ROWS)
    )
    # The bits an unsharded layer chooses from the same counts and logits.
    alone = keras_mpe.MixedPrecisionEmbedding(
        ROWS, 4, num_groups=8, temperature=layer.current_temperature
    )
    alone.set_frequencies(np.bincount(ids.ravel(), minlength=ROWS))
    alone._precision_logits.assign(layer._precision_logits.numpy())
    np.testing.assert_array_equal(alone.select_bits(), layer.bits_per_group())
    # Trained, converted and exported predictions agree.
    x = ids[:256]
    trained = model(x, training=False).numpy()
    served = keras_mpe.convert(model)
    testing_utils.assert_same_predictions(trained, served(x, training=False))
    path = os.path.join(folder, "ctr", "1")
    keras_mpe.export_saved_model(served, path)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    (name,) = signature.structured_input_signature[1]
    exported = signature(**{name: tf.constant(x)})["outputs"]
    testing_utils.assert_same_predictions(trained, exported)


if __name__ == "__main__":
    if sys.argv[1] == "refuse":
        refuse()
    else:
        train(sys.argv[2])
    print("all checks passed")
