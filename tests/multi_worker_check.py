"""One worker of a MultiWorkerMirroredStrategy cluster on this machine,
run by `distribute_test.py` as one process per worker:

    python tests/multi_worker_check.py INDEX PORT0 PORT1 ...

Trains the CTR model with `MPECallback`, whose counting pass counts this
worker's shard of `frequency_data` and sums the counts over the workers.
Prints the lookups this worker counted ("local lookups N"), checks that
the layer holds the whole data set's counts, and prints "all checks
passed" last.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ROWS = 1000


def main(index: int, ports: list):
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )
    import numpy as np
    import tensorflow as tf
    import testing_utils

    import keras_mpe
    from keras_mpe import _compat
    from keras_mpe import frequency

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    summed = frequency._summed_over_workers

    def report_local(strategy, counts):
        print("local lookups", int(sum(c.sum() for c in counts)), flush=True)
        return summed(strategy, counts)

    frequency._summed_over_workers = report_local
    ids, labels = testing_utils.zipf_ctr(rows=2000, vocab=ROWS)
    data = testing_utils.dataset(ids, labels)
    with strategy.scope():
        layer = keras_mpe.MixedPrecisionEmbedding(
            ROWS, 4, num_groups=8, bit_penalty=3e-3, seed=1
        )
        model = testing_utils.compile_ctr(testing_utils.ctr_model(layer))
    if _compat.IS_KERAS_3:
        # Keras 3's own `fit` fails under this strategy
        # (keras-team/keras#20585); its counting pass works.
        (counts,) = frequency.count_ids(model, [layer], data)
        layer.set_frequencies(counts)
    else:
        callback = keras_mpe.MPECallback(data, search_epochs=1, verbose=0)
        model.fit(data, epochs=2, verbose=0, callbacks=[callback])
        assert layer.phase == keras_mpe.Phase.FIXED
    testing_utils.assert_counted(
        layer, np.bincount(ids.ravel(), minlength=ROWS)
    )
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
