"""The few differences between tf_keras (Keras 2) and Keras 3, in one place.

keras_mpe is written against `tf.keras`, which is tf_keras 2.x when
`TF_USE_LEGACY_KERAS=1` is set before TensorFlow is imported (needed by
TensorFlow Recommenders) and Keras 3 otherwise. Everything that differs
between the two lives here.
"""

import re

import numpy as np
import tensorflow as tf

keras = tf.keras

IS_KERAS_3 = keras.layers.Layer.__module__.startswith("keras.")


def register_serializable(cls):
    """Registers `cls` for Keras (de)serialization under `keras_mpe>`."""
    return keras.utils.register_keras_serializable(package="keras_mpe")(cls)


# `add_weight` arguments for a variable that is never cast when read (Keras
# autocasts float variables to a mixed policy's compute dtype otherwise).
NO_AUTOCAST = (
    {"autocast": False} if IS_KERAS_3 else {"experimental_autocast": False}
)


def only_first_replica():
    """The aggregation for state assigned outside the train step."""
    if IS_KERAS_3:
        return "only_first_replica"
    return tf.VariableAggregation.ONLY_FIRST_REPLICA


def check_strategy(strategy, caller: str):
    """Raises when `strategy` cannot train MixedPrecisionEmbedding here.

    Keras 3 cannot train with `ParameterServerStrategy` (its `fit` wants
    datasets from `ClusterCoordinator.create_per_worker_dataset`, which it
    does not make); tf_keras can.
    """
    if IS_KERAS_3 and is_parameter_server(strategy):
        raise ValueError(
            f"{caller}: Keras 3 cannot train with "
            "tf.distribute.experimental.ParameterServerStrategy: `model.fit` "
            "under it needs "
            "per-worker datasets that Keras 3 does not create. Use tf_keras "
            "for parameter-server training (pip install tf-keras, set "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow; see "
            "docs/scaling.md), or MirroredStrategy / "
            "MultiWorkerMirroredStrategy under Keras 3."
        )


def is_parameter_server(strategy) -> bool:
    """Whether `strategy` is a `ParameterServerStrategy`."""
    return isinstance(
        strategy, tf.distribute.experimental.ParameterServerStrategy
    )


def worker_count(strategy) -> int:
    """How many machines run steps under `strategy`: the workers (and the
    chief, which runs steps under MultiWorkerMirroredStrategy) of its
    cluster, 1 for a strategy without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None and is_parameter_server(strategy):
        # Its public `cluster_resolver` is None: it keeps the one it was
        # given in `_cluster_resolver` (parameter_server_strategy_v2.py).
        resolver = strategy._cluster_resolver
    spec = resolver.cluster_spec() if resolver is not None else None
    if not spec or not spec.jobs:
        return 1
    workers = spec.num_tasks("worker") if "worker" in spec.jobs else 0
    if not is_parameter_server(strategy) and "chief" in spec.jobs:
        workers += spec.num_tasks("chief")
    return max(workers, 1)


def on_parameter_servers(weight) -> bool:
    """Whether `weight` lives on a ParameterServerStrategy's servers: a
    partitioned variable, or a shard or variable in one of the strategy's
    wrappers (`tensorflow/python/distribute/ps_values.py`, private)."""
    variable = tf_variable(weight)
    sharded = tf.__internal__.distribute.ShardedVariable
    wrappers = ("AggregatingVariable", "CachingVariable")
    return isinstance(variable, sharded) or type(variable).__name__ in wrappers


def gathered_weights(layer) -> list:
    """`layer.get_weights()`, each partitioned variable's parts (listed
    apart by tf_keras as `<name>/part_<i>`) joined along axis 0."""
    joined = {}  # insertion ordered: the first part's position
    pairs = zip(layer.weights, layer.get_weights(), strict=True)
    for position, (weight, value) in enumerate(pairs):
        part = re.fullmatch(r"(.*)/part_\d+(:\d+)?", weight.name)
        key = part.group(1) if part else position
        joined.setdefault(key, []).append(value)
    return [np.concatenate(values) for values in joined.values()]


def tf_variable(weight):
    """The `tf.Variable` behind a layer weight (a KerasVariable in Keras 3)."""
    return weight.value if IS_KERAS_3 else weight


def gather_rows(weight, indices):
    """`tf.gather(weight, indices)` along axis 0, the faster way per world.

    Measured with `benchmarks/training_speed.py` (1e6 x 16 table, batch
    4096 x 26, Adam): under Keras 3, gathering from the read tensor (as
    Keras 3's own Embedding does) made a training step 8-15% faster than
    a `ResourceGather` on the variable; under tf_keras the
    `ResourceGather` kept the FIXED-phase step at 1.02x a plain Embedding
    step, the read tensor made it 1.5x.
    """
    if isinstance(weight, tf.__internal__.distribute.ShardedVariable):
        # A table partitioned over parameter servers: `tf.gather` reads it
        # with `sparse_read`, which in a traced function joins the shards'
        # rows without restoring the ids' order (ids [600, 0] of two
        # 500-row shards gave rows [0, 600]); `embedding_lookup` keeps it.
        return tf.nn.embedding_lookup(weight, indices)
    if IS_KERAS_3:
        return tf.gather(read(weight), indices)
    return tf.gather(weight, indices)


def _row_blocks(weight, start, stop):
    """`(variable, first row, offset)` per piece of rows [start, stop) of
    `weight`: the variable itself, or each shard of a partitioned one."""
    variable = tf_variable(weight)
    if not isinstance(variable, tf.__internal__.distribute.ShardedVariable):
        return [(variable, start, 0)]
    blocks, first = [], 0
    for shard in variable.variables:
        last = first + shard.shape[0]
        if first < stop and start < last:
            low = max(start, first)
            blocks.append((shard, low - first, low - start))
        first = last
    return blocks


def _copies(variable) -> list:
    """The per-device copies of a mirrored variable, or the variable."""
    if isinstance(variable, tf.distribute.DistributedValues):
        return list(variable.values)
    return [variable]


def assign_rows(weight, start: int, values):
    """Assigns `values` `(n, ...)` to rows [start, start + n) of `weight`
    (a variable, a partitioned or a mirrored one, or one on a parameter
    server) without reading the rest: a scatter per shard and per copy.
    (A slice assignment copied the whole variable each time: 0.11 s per
    call at 1e7 x 16, against 1.5 ms.)"""
    stop = start + int(values.shape[0])
    for variable, first, offset in _row_blocks(weight, start, stop):
        count = min(stop - start - offset, variable.shape[0] - first)
        rows = tf.IndexedSlices(
            values[offset : offset + count], tf.range(first, first + count)
        )
        for copy in _copies(variable):
            copy.scatter_update(rows)


def read_rows(weight, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of `weight` (a variable, a partitioned or a
    mirrored one), gathered: a slice would read the whole variable."""
    pieces = []
    for variable, first, offset in _row_blocks(weight, start, stop):
        count = min(stop - start - offset, variable.shape[0] - first)
        rows = tf.range(first, first + count)
        pieces.append(tf.gather(_copies(variable)[0], rows).numpy())
    return np.concatenate(pieces)


def optimizer_steps(optimizer) -> int:
    """The optimizer's step counter (`iterations`), as an int (it may be a
    distributed variable)."""
    return int(tf.convert_to_tensor(optimizer.iterations).numpy())


def current_learning_rate(optimizer) -> float:
    """The optimizer's learning rate at its current step (a schedule's
    value at `iterations`)."""
    rate = optimizer.learning_rate
    if callable(rate):
        rate = rate(optimizer_steps(optimizer))
    return float(tf.convert_to_tensor(rate).numpy())


def optimizer_variables(optimizer):
    """The optimizer's state variables (a list in Keras 3, callable in 2)."""
    return list(optimizer.variables)


def optimizer_settings(optimizer) -> list:
    """The optimizer variables that are settings, not training state: the
    learning rates (a loss-scale optimizer's and its inner optimizer's)
    and a loss-scale optimizer's dynamic scale and its step counter."""
    inner = getattr(optimizer, "inner_optimizer", None)
    candidates = [
        getattr(optimizer, "_learning_rate", None),
        getattr(inner, "_learning_rate", None),
        getattr(optimizer, "dynamic_scale", None),
        getattr(optimizer, "step_counter", None),
    ]
    return [c for c in candidates if c is not None]


def read(weight):
    """The current value of a layer weight, as a tensor."""
    return tf.convert_to_tensor(tf_variable(weight))


def in_xla_compilation() -> bool:
    """Whether the function being traced will be compiled by XLA.

    True inside `tf.function(jit_compile=True)` (which a Keras model
    compiled with `jit_compile=True` uses for its train, test and predict
    steps), including functions nested in one; False eagerly and in
    functions run without XLA.
    """
    return tf.__internal__.get_enclosing_xla_context() is not None


def print_msg(message: str):
    """Prints as Keras prints its own messages: to stdout, or to absl
    logging (INFO) after `disable_interactive_logging()`."""
    if IS_KERAS_3:
        from keras.src.utils import io_utils
    else:
        from tf_keras.src.utils import io_utils
    io_utils.print_msg(message)


def sublayers(model) -> list:
    """Every layer nested inside `model` (not `model` itself)."""
    return list(model._flatten_layers(include_self=False))


def input_spec(keras_tensor):
    """The `tf.TypeSpec` of a functional model's input (ragged, sparse
    or dense)."""
    if not IS_KERAS_3:
        return keras_tensor.type_spec
    shape, dtype = keras_tensor.shape, keras_tensor.dtype
    if getattr(keras_tensor, "ragged", False):
        return tf.RaggedTensorSpec(shape, dtype, ragged_rank=1)
    if getattr(keras_tensor, "sparse", False):
        return tf.SparseTensorSpec(shape, dtype)
    return tf.TensorSpec(shape, dtype)


def graph_input_ranks(model):
    """The ranks of a functional model's inputs, batch included; None
    for a subclassed model."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [len(x.shape) for x in inputs] if inputs else None


NO_CALL_SPEC = (
    "Keras 3 keeps the shapes of a subclassed model's first call, not "
    "its dtypes"
    if IS_KERAS_3
    else "the model has not been called"
)


def first_call_spec(model):
    """The `tf.TensorSpec`s of the inputs a subclassed model was first
    called with (batch dimension None), or None where not recorded."""
    if IS_KERAS_3:
        return None
    return model._get_save_spec(dynamic_batch=True)


def is_graph_model(layer) -> bool:
    """A functional or Sequential model (cloneable layer by layer)."""
    if isinstance(layer, keras.Sequential):
        return True
    if IS_KERAS_3:
        return isinstance(layer, keras.Model) and hasattr(layer, "_operations")
    return isinstance(layer, keras.Model) and layer._is_graph_network


def clone_model(model, clone_function):
    """`keras.models.clone_model`, keeping ragged and sparse inputs (Keras
    3 recreates a functional model's inputs as dense otherwise)."""
    inputs = None
    if IS_KERAS_3 and not isinstance(model, keras.Sequential):

        def fresh(tensor):
            return keras.Input(
                batch_shape=tensor.shape,
                dtype=tensor.dtype,
                sparse=tensor.sparse,
                ragged=tensor.ragged,
                name=tensor.name,
            )

        inputs = tf.nest.map_structure(fresh, model._inputs_struct)
    return keras.models.clone_model(
        model, input_tensors=inputs, clone_function=clone_function
    )


def replace_sublayer(parent, name, layer):
    """Sets `parent.<name> = layer` on a built layer, untracking the old."""
    tracker = getattr(parent, "_tracker", None)  # Keras 3 locks built layers
    if IS_KERAS_3 and tracker is not None:
        tracker.untrack(getattr(parent, name))
        delattr(parent, name)
        locked = tracker.locked
        tracker.unlock()
        setattr(parent, name, layer)
        tracker.locked = locked
    else:
        delattr(parent, name)
        setattr(parent, name, layer)
