"""Frequency statistics: counting ids and grouping rows by frequency.

Counting runs the model's own forward pass over a dataset with every
MixedPrecisionEmbedding in its `counting()` mode: the layers record the ids they
receive (after any StringLookup / Hashing in the model) and return zeros,
so any model structure works without an id extractor. The ids of a batch
are reduced on the device with `unique_with_counts`; the host adds the
per-batch counts into one vector per layer. Under a multi-worker strategy
each worker counts its shard of the data (`count_ids`).

Rows are sorted by how often their id occurs in the training data (rarest
first, ties broken by the higher id first) and cut into `num_groups` chunks of
ceil(rows / num_groups) rows each (the last chunk smaller; with many groups
and few rows the last groups can be empty). Group 0 holds the rarest ids.

Each group's weight in the bit penalty is its share of the occurrences
relative to the rarest group:

    C_g = sum of the counts of the rows in group g
    c_g = C_g / min over g' of C_g'

A group whose count is zero (no rows, or only unseen ids) gets the weight
of the rarest non-empty group, so that it neither makes every weight
infinite nor weakens the penalty on the others.
"""

import contextlib
import dataclasses

import numpy as np
import tensorflow as tf

from keras_mpe import _compat


@dataclasses.dataclass(frozen=True)
class FrequencyGroups:
    """Rows grouped by frequency.

    Attributes:
        group_ids: int32 array `(rows,)`. The group of each row.
        group_counts: int64 array `(groups,)`. Occurrences per group (C_g).
        group_sizes: int64 array `(groups,)`. Rows per group.
        group_weights: float32 array `(groups,)`. Penalty weights c_g.
    """

    group_ids: np.ndarray
    group_counts: np.ndarray
    group_sizes: np.ndarray
    group_weights: np.ndarray


def group_by_frequency(counts, num_groups: int) -> FrequencyGroups:
    """Groups rows into `num_groups` equal-population frequency groups.

    Example:

    >>> groups = group_by_frequency([5, 0, 9, 1], num_groups=2)
    >>> groups.group_ids.tolist(), groups.group_weights.tolist()
    ([1, 0, 1, 0], [1.0, 14.0])

    Args:
        counts: Integer array `(rows,)`. How often each row id occurred.
        num_groups: Integer. How many groups, from 1 to the number of rows.

    Returns:
        A `FrequencyGroups`.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            "`counts` must be a non-empty vector. "
            f"Received: counts with shape {counts.shape}"
        )
    if np.any(counts < 0):
        raise ValueError(
            "`counts` must be non-negative. "
            f"Received: a minimum of {counts.min()}"
        )
    rows = counts.size
    if not 1 <= num_groups <= rows:
        raise ValueError(
            f"`num_groups` must be between 1 and the number of rows ({rows})."
            f" Received: num_groups={num_groups}"
        )
    counts = counts.astype(np.int64)
    chunk = -(-rows // num_groups)
    # Ascending count; among equal counts the higher id first, so that a
    # frequency-ordered vocabulary (id 0 the most frequent) gives groups
    # that are contiguous id ranges (compact serving layout).
    order = np.lexsort((-np.arange(rows), counts))
    group_ids = np.empty(rows, np.int32)
    group_ids[order] = np.arange(rows) // chunk
    group_counts = np.bincount(group_ids, weights=counts, minlength=num_groups)
    group_counts = group_counts.astype(np.int64)
    group_sizes = np.bincount(group_ids, minlength=num_groups).astype(np.int64)
    return FrequencyGroups(
        group_ids=group_ids,
        group_counts=group_counts,
        group_sizes=group_sizes,
        group_weights=penalty_weights(group_counts),
    )


def penalty_weights(group_counts) -> np.ndarray:
    """The penalty weights c_g = C_g / min C_g' (empty groups: the rarest)."""
    group_counts = np.asarray(group_counts, np.float64)
    seen = group_counts[group_counts > 0]
    if seen.size == 0:
        raise ValueError(
            "Every frequency group has a count of zero: no id was counted. "
            "Check that `frequency_data` yields the training inputs."
        )
    floor = seen.min()
    return (np.where(group_counts > 0, group_counts, floor) / floor).astype(
        np.float32
    )


def _forward(model, inputs):
    """Runs the model on `inputs` (TFRS models without `call`: the loss)."""
    try:
        return model(inputs, training=False)
    except NotImplementedError:
        return model.compute_loss(inputs, training=False)


def check_frequency_data(dataset):
    """Raises a ValueError unless `dataset` can be iterated as batches."""
    if isinstance(dataset, (np.ndarray, tf.Tensor, dict)) or not hasattr(
        dataset, "__iter__"
    ):
        received = "None" if dataset is None else type(dataset).__name__
        raise ValueError(
            "`frequency_data` must be a dataset of training batches, as "
            "given to `fit` (e.g. tf.data.Dataset.from_tensor_slices((x, y))"
            f".batch(256)). Received: frequency_data={received}"
        )
    if (
        isinstance(dataset, tf.data.Dataset)
        and dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    ):
        raise ValueError(
            "`frequency_data` must be finite: it is read once to the end to "
            "count ids. Pass the training data without `.repeat()`. "
            "Received: frequency_data with infinite cardinality"
        )


def _check_batched(model, inputs):
    """Raises unless `inputs` look like a batch for `model`: no scalar
    feature, and the ranks of a functional model's inputs."""
    ranks = sorted(len(x.shape) for x in tf.nest.flatten(inputs))
    expected = _compat.graph_input_ranks(model)
    if expected is not None and len(expected) == len(ranks):
        wrong = ranks != sorted(expected)
    else:
        wrong, expected = False, "any"
    if wrong or 0 in ranks:
        raise ValueError(
            "`frequency_data` must yield batches, as given to `fit` (is it "
            f"batched?). Received elements of structure {_spec(inputs)}; "
            f"the model's inputs have ranks {expected}"
        )


def batch_count(dataset):
    """The number of batches of `dataset`, or None where unknown."""
    if isinstance(dataset, tf.data.Dataset):
        batches = int(dataset.cardinality())
        return batches if batches >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def _spec(inputs):
    """Shapes and dtypes of a nested structure, for messages."""
    return tf.nest.map_structure(
        lambda x: f"{tf.as_dtype(x.dtype).name}{list(x.shape)}", inputs
    )


def count_ids(model, layers, dataset, verbose: int = 0) -> list:
    """Counts how often each row of each layer is looked up over `dataset`.

    Where the counting runs follows the model's distribution strategy:

    - one machine (no strategy, `MirroredStrategy`): here, batch by batch;
    - `MultiWorkerMirroredStrategy` with several workers: each worker
      counts its shard of `dataset` (split as `fit` splits it, by the
      dataset's auto-shard policy) and the counts are summed across the
      workers, so every worker gets the whole data set's counts;
    - `ParameterServerStrategy`: on the workers, one shard of `dataset`
      per worker (`dataset.shard`), each added into count variables on
      the parameter servers; the coordinator reads only the totals.

    Args:
        model: The Keras model that holds `layers`.
        layers: The MixedPrecisionEmbedding layers to count for.
        dataset: Iterable of batches, as given to `model.fit`: `x`,
            `(x, y)` or `(x, y, sample_weight)`. A `tf.data.Dataset` under a
            multi-worker strategy.
        verbose: Integer. 1 shows a Keras progress bar of the batches.

    Returns:
        One int64 array `(layer.input_dim,)` of counts per layer.
    """
    check_frequency_data(dataset)
    strategy = model.distribute_strategy
    workers = _compat.worker_count(strategy)
    if workers > 1 and not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "`frequency_data` must be a tf.data.Dataset under "
            f"{type(strategy).__name__} with {workers} workers, so that "
            "each worker counts its shard. Received: frequency_data="
            f"{type(dataset).__name__}"
        )
    with contextlib.ExitStack() as stack:
        recorders = [stack.enter_context(layer.counting()) for layer in layers]

        def batch_ids(inputs):
            """Each layer's unique ids in `inputs` and their counts
            (traced within a tf.function)."""
            for recorder in recorders:
                recorder.take()  # what an earlier trace left
            _forward(model, inputs)
            graph = tf.compat.v1.get_default_graph()
            batch_counts = []
            for recorder in recorders:
                # Keras may also trace the model symbolically (to build
                # it) in a scratch graph; only this graph's ids are this
                # batch's.
                ids = [
                    tf.reshape(i, [-1])
                    for i in recorder.take()
                    if i.graph is graph
                ]
                ids = tf.concat(ids, 0) if ids else tf.zeros([0], tf.int32)
                unique, _, count = tf.unique_with_counts(ids, tf.int32)
                batch_counts.append((unique, count))
            return batch_counts

        if _compat.is_parameter_server(strategy):
            return _count_on_workers(
                strategy, layers, batch_ids, dataset, workers, verbose
            )
        if workers > 1:
            dataset = strategy.experimental_distribute_dataset(dataset)
        counts = _count_here(model, layers, batch_ids, dataset, verbose)
        if workers > 1:
            counts = _summed_over_workers(strategy, counts)
        return counts


def _count_here(model, layers, batch_ids, dataset, verbose) -> list:
    """Counts batch by batch in this process (a distributed dataset: the
    batches of this worker's replicas)."""
    counts = [np.zeros(layer.input_dim, np.int64) for layer in layers]
    count_batch = tf.function(batch_ids, reduce_retracing=True)
    distributed = isinstance(dataset, tf.distribute.DistributedDataset)
    total_batches = 0
    progress = _compat.keras.utils.Progbar(
        None if distributed else batch_count(dataset),
        verbose=verbose,
        unit_name="batch",
    )
    for element in dataset:
        for batch in _local_batches(model.distribute_strategy, element):
            inputs, _, _ = _compat.keras.utils.unpack_x_y_sample_weight(batch)
            if total_batches == 0:
                _check_batched(model, inputs)
            total_batches += 1
            try:
                batch_counts = count_batch(inputs)
            except (ValueError, TypeError, tf.errors.OpError) as error:
                raise ValueError(
                    "`frequency_data` must yield batches that the model "
                    "accepts, as given to `fit` (is it batched?). The model "
                    f"failed on an element of structure {_spec(inputs)}: "
                    f"{error}"
                ) from error
            for total, (unique, count) in zip(
                counts, batch_counts, strict=True
            ):
                total[unique.numpy()] += count.numpy()
        progress.add(1)
    return counts


def _local_batches(strategy, element) -> list:
    """The batches of this worker's replicas in an element of a
    distributed dataset (of any other dataset: the element)."""
    flat = [
        strategy.experimental_local_results(x) for x in tf.nest.flatten(element)
    ]
    return [
        tf.nest.pack_sequence_as(element, [x[replica] for x in flat])
        for replica in range(len(flat[0]))
    ]


def _summed_over_workers(strategy, counts) -> list:
    """`counts` summed over the workers of a multi-worker strategy."""
    local = [tf.constant(c) for c in counts]
    zeros = [tf.zeros_like(c) for c in local]
    given = []

    def this_worker(context):
        del context  # called once per local replica, in order
        given.append(None)
        return local if len(given) == 1 else zeros

    values = strategy.experimental_distribute_values_from_function(this_worker)
    return [np.asarray(strategy.reduce("SUM", c, axis=None)) for c in values]


def _count_on_workers(strategy, layers, batch_ids, dataset, workers, verbose):
    """Counts under a ParameterServerStrategy: worker w runs a closure that
    adds up every batch of `dataset.shard(workers, w)` into count
    variables on the parameter servers."""
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(
        strategy
    )
    with strategy.scope():
        totals = [
            tf.Variable(tf.zeros([layer.input_dim], tf.int64), trainable=False)
            for layer in layers
        ]
        added = tf.Variable(tf.constant(0, tf.int64), trainable=False)

    @tf.function
    def count_shard(iterator):
        counted = tf.constant(0, tf.int64)
        for batch in iterator:
            inputs, _, _ = _compat.keras.utils.unpack_x_y_sample_weight(batch)
            for total, (unique, count) in zip(
                totals, batch_ids(inputs), strict=True
            ):
                total.scatter_add(
                    tf.IndexedSlices(tf.cast(count, tf.int64), unique)
                )
            added.assign_add(1)
            counted += 1
        return counted

    shards = [
        iter(coordinator.create_per_worker_dataset(dataset.shard(workers, w)))
        for w in range(workers)
    ]
    results = [coordinator.schedule(count_shard, args=(s,)) for s in shards]
    coordinator.join()
    counted = sum(int(result.fetch()) for result in results)
    # A closure that a lost worker left part-way is run again on another
    # worker: its shard's first batches would be counted twice.
    if counted != int(added.numpy()):
        raise RuntimeError(
            f"Counting added {int(added.numpy())} batches for {counted} "
            "batches read: a worker failed during the counting pass. Run "
            "`fit` again."
        )
    if verbose:
        _compat.print_msg(f"Counted {counted} batches on {workers} workers.")
    return [_compat.read_rows(total, 0, total.shape[0]) for total in totals]
