"""Parameter-server training of a CTR model with an MPE table (tf_keras).

Starts a cluster inside this process (--workers workers and --ps
parameter servers on free local ports; this process is the coordinator),
so that it runs on one machine. Under
`tf.distribute.experimental.ParameterServerStrategy` with a
`MinSizePartitioner`, the embedding table and its per-row group ids are
partitioned over the parameter servers; `model.fit` runs the steps on the
workers with `MPECallback` (float warm-up, search, selection, rewind,
retraining); `keras_mpe.convert` and `export_saved_model` gather the
shards; the served predictions must equal the trained model's.

    TF_USE_LEGACY_KERAS=1 python examples/distributed_ps.py

Keras 3 cannot train under this strategy (MPECallback says so); use
tf_keras. On a real cluster every task starts `tf.distribute.Server` from
its `TF_CONFIG` and the coordinator builds the strategy from
`tf.distribute.cluster_resolver.TFConfigClusterResolver()` instead of
`in_process_cluster`; the rest is the same. See docs/scaling.md.
"""

import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import example_flags  # noqa: E402  (examples/ is first on sys.path)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mpe  # noqa: E402
from keras_mpe import datasets  # noqa: E402

keras = tf.keras


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def in_process_cluster(workers: int, ps: int):
    """Starts `workers` worker and `ps` parameter-server gRPC servers in
    this process; returns their cluster resolver."""
    spec = tf.train.ClusterSpec(
        {
            "worker": [f"localhost:{_free_port()}" for _ in range(workers)],
            "ps": [f"localhost:{_free_port()}" for _ in range(ps)],
        }
    )
    # With fewer cores than servers, the servers' default thread pools
    # can wait on each other for ever; one inter-op thread more than the
    # workers avoids it (as TensorFlow's own in-process clusters do).
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=workers + 1)
    for job, tasks in (("worker", workers), ("ps", ps)):
        for task in range(tasks):
            tf.distribute.Server(
                spec, job_name=job, task_index=task, config=config, start=True
            )
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, rpc_layer="grpc"
    )


def parameter_server_strategy(resolver, shards: int, min_shard_bytes: int):
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=shards
    )
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner
    )


def ctr_model(vocabulary: int, args):
    """26 categorical fields through one MPE table, 13 numeric features,
    MLP 64-32."""
    categorical = keras.Input((26,), dtype="int32", name="categorical")
    numeric = keras.Input((13,), name="numeric")
    layer = keras_mpe.MixedPrecisionEmbedding(
        vocabulary,
        args.dim,
        num_groups=args.num_groups,
        **example_flags.search_knobs(args),
        seed=args.seed,
    )
    x = keras.layers.Flatten()(layer(categorical))
    x = keras.layers.Concatenate()([x, tf.math.log1p(numeric)])
    for units in (64, 32):
        x = keras.layers.Dense(units, activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(
        {"categorical": categorical, "numeric": numeric}, outputs
    )
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        "binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model, layer


def main(args):
    if int(getattr(keras, "__version__", "2").split(".")[0]) >= 3:
        raise SystemExit(
            "Parameter-server training needs tf_keras: run with "
            "TF_USE_LEGACY_KERAS=1 (pip install tf-keras)."
        )
    resolver = in_process_cluster(args.workers, args.ps)
    # Shards of at least 64 rows of the table, at most one per server.
    strategy = parameter_server_strategy(resolver, args.ps, args.dim * 4 * 64)
    cardinalities = datasets.field_cardinalities(args.max_cardinality)
    vocabulary = sum(cardinalities)
    train = datasets.criteo_like(
        args.rows, args.batch_size, args.max_cardinality, seed=args.seed
    )
    test = datasets.criteo_like(
        args.rows // 5,
        args.batch_size,
        args.max_cardinality,
        first_row=args.rows,
        seed=args.seed,
    )
    with strategy.scope():
        model, layer = ctr_model(vocabulary, args)
    shards = [v.shape[0] for v in layer.embeddings.variables]
    print(
        f"{args.workers} workers, {args.ps} parameter servers; table "
        f"{vocabulary} x {args.dim} in shards of {shards} rows"
    )
    steps = int(train.cardinality())
    callback = keras_mpe.MPECallback(
        train, search_epochs=args.search_epochs, verbose=1
    )
    model.fit(
        train.repeat(),
        epochs=args.search_epochs + args.epochs,
        steps_per_epoch=steps,
        callbacks=[callback],
        verbose=2,
    )
    served = keras_mpe.convert(model, layout=args.layout)
    print(keras_mpe.compression_report(served))
    keras_mpe.export_saved_model(served, args.export_dir, overwrite=True)
    signature = tf.saved_model.load(args.export_dir).signatures[
        "serving_default"
    ]
    features, _ = next(iter(test))
    expected = model(features, training=False).numpy()
    exported = signature(**features)["outputs"].numpy()
    difference = float(np.abs(expected - exported).max())
    print(
        f"exported to {args.export_dir}; served predictions of "
        f"{len(expected)} test rows differ from the trained model's by at "
        f"most {difference:.2e}"
    )
    if difference > 1e-5:
        raise SystemExit("served predictions differ from the trained model")


def define_flags():
    """The command line. Defined when run as a script, not on import."""
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_integer("workers", 2, "Worker servers.", lower_bound=1)
    flags.DEFINE_integer(
        "ps", 2, "Parameter servers (and table shards).", lower_bound=1
    )
    flags.DEFINE_integer(
        "rows", 20_000, "Synthetic training rows.", lower_bound=1
    )
    flags.DEFINE_integer(
        "max-cardinality", 500, "Cap on each field's vocabulary.", lower_bound=2
    )
    example_flags.define_training(
        epochs=2,
        epochs_help="Retraining epochs after the search.",
        search_epochs=2,
        batch_size=500,
        dim=8,
        num_groups=32,
        learning_rate=1e-3,
    )
    example_flags.define_export_dir("distributed_ps")
    flags.adopt_module_key_flags(example_flags)
    return example_flags


if __name__ == "__main__":
    define_flags().run(main)
