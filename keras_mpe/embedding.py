"""MixedPrecisionEmbedding: an embedding whose rows learn their precision.

The layer keeps a float table during training and runs in one of three
phases, held in a variable so that switching needs no retrace:

| phase  | output of row i                                   | bit penalty |
|--------|---------------------------------------------------|-------------|
| FLOAT  | e_i (a plain embedding)                           | none        |
| SEARCH | sum over b > 0 of p_{g(i),b} * Q_b(e_i)           | lambda * R  |
| FIXED  | Q_{b*_{g(i)}}(e_i), or 0 when b*_{g(i)} = 0       | none        |

with g(i) the frequency group of row i, p_g = softmax(gamma_g / tau) the
group's distribution over the bit candidates, Q_b the LSQ+ fake quantizer
of `quantizer.py` and the penalty

    R = sum over groups g of (1 / c_g) * sum over b of p_{g,b} * b

(c_g: the group's frequency weight, see `frequency.py`). All three phases
are one arithmetic expression: the phase picks the mixture weights (the
softmax, a one-hot of the chosen bits, or none), so the layer has no
control flow (under XLA, one conditional on the phase: see `_mix`) and
compiles with XLA.

Variables:

| variable           | shape            | dtype   | trained | role            |
|--------------------|------------------|---------|---------|-----------------|
| embeddings         | (rows, dim)      | float32 | yes     | latent table e  |
| step_sizes         | (quantized K,)   | float32 | yes     | alpha_b / scale |
| offset             | (dim,)           | float32 | yes     | beta / scale    |
| quantizer_scale    | ()               | float32 | no      | scale           |
| precision_logits   | (groups, K)      | float32 | yes     | gamma           |
| group_ids          | (rows,)          | int8    | no      | g(i) (int16,    |
|                    |                  |         |         | int32 past 127, |
|                    |                  |         |         | 32767 groups;   |
|                    |                  |         |         | int32 under     |
|                    |                  |         |         | MultiWorker-    |
|                    |                  |         |         | Mirrored)       |
| group_counts       | (groups,)        | int64   | no      | C_g, lookups    |
| rewinds_to_copy    | ()               | int32   | no      | 1: the rewind   |
|                    |                  |         |         | target is a     |
|                    |                  |         |         | copy (below)    |
| group_weights      | (groups,)        | float32 | no      | c_g             |
| chosen_bits        | (groups,)        | int32   | no      | b*_g            |
| phase              | ()               | int32   | no      | FLOAT/SEARCH/.. |
| temperature        | ()               | float32 | no      | tau (set from   |
|                    |                  |         |         | the search's    |
|                    |                  |         |         | length if None) |
| kept_<name>        | as <name>        | float32 | no      | best epoch's    |
|                    |                  |         |         | logits, steps,  |
|                    |                  |         |         | offset          |
| kept_score         | ()               | float64 | no      | its score (NaN: |
|                    |                  |         |         | none kept)      |

Per row the layer holds only the table and a group id: the rewind
target, the table's initial values, is made again from `seed`
(`initial_table.py`), and counts are kept per group. Only when a search
starts from a table that is no longer its initial values (pretrained, or
trained by an earlier `fit`) does `snapshot_embeddings` keep a copy, in
host memory.

The step sizes and the offset are stored in units of `scale`, the table's
mean |e| when the step sizes are initialised, and used as alpha_b =
scale * step_sizes[b] and beta = scale * offset. Adaptive optimizers (Adam,
Adagrad) move every variable by about the learning rate per step whatever
its gradient's size, and the LSQ gradients of alpha and beta keep their
sign for many steps. Stored in absolute units, alpha and beta of a table
whose entries are about 0.01 moved by a tenth of that scale per step: on
a long search (490 steps of a 2M-row data set) beta drifted past the 1-
and 2-bit ranges and the step sizes grew 20-50 fold, so every low-bit row
came out as the same constant and the most frequent groups were pruned.
In units of the scale they move by about the learning rate relative to
the scale (0.1% per step at Adam's 1e-3). The price: step sizes cannot
follow a table that grows several fold after they are set (uniform QAT
started on an untrained table; `MPECallback` sets them after a float
warm-up).
"""

import contextlib
import dataclasses
import enum
import functools
import numbers

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import frequency
from keras_mpe import ids
from keras_mpe import initial_table
from keras_mpe import quantizer
from keras_mpe import selection
from keras_mpe.storage import MAX_BITS

keras = _compat.keras
DEFAULT_GROUPS = 128
# With `temperature=None`: tau until the search's length is known, and the
# softmax distance a logit can travel over the whole search
# (tau = learning rate * search steps / LOGIT_TRAVEL). Measured on the
# KDD12 sample (benchmarks/RESULTS.md), 256 search steps: at 16 the
# distributions still moved in the last, overfit search epoch and the
# bit penalty's size lost 0.015 AUC; at 64 they settle in the first
# search epoch, as the reference's did, and it lost 0.002.
AUTO_TEMPERATURE_START = 0.1
LOGIT_TRAVEL = 64.0


@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """What a MixedPrecisionEmbedding holds per frequency group, group 0
    the rarest; every field is an array of length `num_groups`.

    Attributes:
        bits: int32. The chosen bit-widths (meaningful in FIXED).
        expected_bits: float64. Bits expected under the current
            distribution over `bit_candidates`.
        rows: int64. Rows (ids) in the group.
        count: int64. Lookups of the group's ids counted over the
            frequency data (C_g).
        weight: float32. The group's weight c_g in the bit penalty.
    """

    bits: np.ndarray
    expected_bits: np.ndarray
    rows: np.ndarray
    count: np.ndarray
    weight: np.ndarray


class Phase(enum.IntEnum):
    """What a MixedPrecisionEmbedding computes (see the module docstring)."""

    FLOAT = 0
    SEARCH = 1
    FIXED = 2


def _validate_bit_candidates(bit_candidates):
    candidates = tuple(bit_candidates)
    valid = all(
        isinstance(b, (int, np.integer)) and 0 <= b <= MAX_BITS
        for b in candidates
    )
    if not candidates or not valid:
        raise ValueError(
            "`bit_candidates` must be integers from 0 to "
            f"{MAX_BITS}. Received: bit_candidates={bit_candidates}"
        )
    if len(set(candidates)) != len(candidates):
        raise ValueError(
            "`bit_candidates` must not repeat a bit-width. "
            f"Received: bit_candidates={bit_candidates}"
        )
    if max(candidates) == 0:
        raise ValueError(
            "`bit_candidates` needs at least one bit-width above 0. "
            f"Received: bit_candidates={bit_candidates}"
        )
    return tuple(sorted(int(b) for b in candidates))


def _group_id_dtype(num_groups: int) -> str:
    """The narrowest signed integer type holding the group ids (int32 under
    MultiWorkerMirroredStrategy, whose broadcast of initial values takes
    no narrower integer)."""
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "int32"
    for dtype in ("int8", "int16"):
        if num_groups - 1 <= np.iinfo(dtype).max:
            return dtype
    return "int32"


def _validate_positive_int(name, value, upper=None):
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < 1 or (upper is not None and value > upper):
        valid = (
            "a positive integer"
            if upper is None
            else (f"an integer from 1 to input_dim={upper}")
        )
        raise ValueError(f"`{name}` must be {valid}. Received: {name}={value}")


def _built(method):
    """Builds the layer first: its shapes are known from the arguments,
    so state can be set before the first call (as a subclassed model's
    callback may, before the model has run)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if not self.built:
            self.build()
        return method(self, *args, **kwargs)

    return run


class IdRecorder:
    """The ids a MixedPrecisionEmbedding received while counting."""

    def __init__(self):
        self._ids = []

    def record(self, ids):
        self._ids.append(ids)

    def take(self) -> list:
        """The id tensors recorded since the last `take`, one per call."""
        taken, self._ids = self._ids, []
        return taken


def _recomputed(function):
    """`function` of tensors, with its intermediates recomputed for the
    gradient instead of kept.

    For the static form's `tf.cond` on the phase: TensorFlow makes every
    intermediate that either branch's gradient needs an output of the
    conditional, and under XLA the branch not taken fills its share with
    zeros. The search branch's are several (ids, candidates, dim)
    tensors, so a FIXED-phase training step cost as much as a search step
    (`benchmarks/training_speed.py --jit`, Keras 3: 1.40x a plain
    Embedding step, 1.04x with this). Recomputed, a branch keeps only its
    inputs, which exist outside it anyway.
    """

    @tf.custom_gradient
    def run(*inputs):
        def grad(upstream):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = function(*inputs)
            return tape.gradient(outputs, inputs, output_gradients=upstream)

        return function(*inputs), grad

    return run


@_compat.register_serializable
class MixedPrecisionEmbedding(keras.layers.Layer):
    """Embedding whose rows are quantized at a learned, per-group precision.

    Rows are grouped by how often their id occurs; each group learns a
    distribution over `bit_candidates` (0 bits = pruned) under a
    frequency-weighted bit penalty, then trains at its chosen bit-width.
    `MPECallback` drives the phases from `model.fit`; without it the layer
    is a plain float embedding. Method: Mixed-Precision Embeddings,
    arXiv 2409.20305; quantizer: LSQ+, arXiv 2004.09576.

    Example:

    ```python
    emb = keras_mpe.MixedPrecisionEmbedding(input_dim=10_000, output_dim=16)
    model = tf.keras.Sequential([emb, tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(ds, epochs=4, callbacks=[
        keras_mpe.MPECallback(frequency_data=ds, search_epochs=2)])
    print(emb.bits_per_group())
    ```

    Args:
        input_dim: Integer. Size of the vocabulary (ids are 0..input_dim-1).
        output_dim: Integer. Width of each embedding row.
        bit_candidates: Sequence of distinct integers from 0 to 8. The
            precisions a group can take; 0 prunes the group's rows.
        num_groups: Integer from 1 to `input_dim`, or None for
            min(128, input_dim) (128 is the reference's). Number of
            frequency groups, each with its own precision.
        temperature: Positive float, or None (default) to set it from the
            length of the search. The softmax temperature tau of the
            precision logits. Adam moves a logit by at most about the
            learning rate per step, so over a search of S steps at
            learning rate lr the softmax sees a logit move by at most
            lr * S / tau. None: `MPECallback` sets tau = lr * S /
            `LOGIT_TRAVEL` (64) when the search starts, so that the search
            behaves the same at 50 steps and at 50,000; before that (and
            without the callback) tau is `AUTO_TEMPERATURE_START` (0.1). A
            number fixes tau (the reference's is 3e-3 for about 30,000
            steps).
        bit_penalty: Non-negative float. Weight lambda of the bit penalty.
            The default, 1e-3, prunes the ids seen once in training on
            the samples measured (`benchmarks/RESULTS.md`); with
            `MPECallback(max_metric_drop=...)` guarding the accuracy it
            gave 30-67x at fp32's AUC there.
        embeddings_initializer: Initializer of the table.
        seed: Integer or None. Seed of the table's initial values, which
            the retraining rewinds to (`initial_table.py`): rows in
            chunks of 65,536, chunk c drawn with seed `seed + c`. None:
            the initializer's own seed if it has one, else a random one
            (from NumPy's global generator, so `set_random_seed` fixes it).
        combiner: None, "sum", "mean" or "sqrtn". Pools the rows of each
            example's ids (multi-hot, ragged or sparse ids; see `ids.py`).
        mask_zero: Boolean. Id 0 is padding: no row, not pooled, not
            counted, and dense outputs carry the mask `ids != 0`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Attributes:
        static_shapes: Boolean, False by default. Calls traced for XLA
            (`jit_compile=True`, detected when the step is traced) keep
            every shape static, as XLA needs: no de-duplication of ids
            (`tf.unique`) and a `tf.cond` on the phase instead of a
            phase-dependent column count; other calls quantize each
            distinct id of a batch once, which is faster without XLA.
            True forces the static form everywhere.

    Input shape:
        Integer tensor of any shape `(...)`, or with a `combiner` a
        `(..., ids)` tensor, a `tf.RaggedTensor` `(batch, None)` or a
        `tf.SparseTensor` `(batch, ids)`.

    Output shape:
        `(..., output_dim)` (ragged for ragged ids), or with a `combiner`
        the pooled `(batch, output_dim)`.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        bit_candidates=(0, 1, 2, 3, 4, 5, 6),
        num_groups=None,
        temperature=None,
        bit_penalty: float = 1e-3,
        embeddings_initializer="uniform",
        combiner=None,
        mask_zero: bool = False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate_positive_int("input_dim", input_dim)
        _validate_positive_int("output_dim", output_dim)
        if num_groups is None:
            num_groups = min(DEFAULT_GROUPS, input_dim)
        _validate_positive_int("num_groups", num_groups, upper=input_dim)
        if temperature is not None and not (
            isinstance(temperature, numbers.Real)
            and not isinstance(temperature, bool)
            and 0 < temperature < float("inf")
        ):
            raise ValueError(
                "`temperature` must be a positive number, or None to set it "
                f"from the search's length. Received: temperature={temperature}"
            )
        if not bit_penalty >= 0:
            raise ValueError(
                "`bit_penalty` must be a non-negative number. "
                f"Received: bit_penalty={bit_penalty}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.bit_candidates = _validate_bit_candidates(bit_candidates)
        self.num_groups = int(num_groups)
        self.temperature = None if temperature is None else float(temperature)
        self.bit_penalty = float(bit_penalty)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        if seed is None:
            seed = self.embeddings_initializer.get_config().get("seed")
        if seed is None:
            seed = int(np.random.randint(initial_table.MAX_SEED))
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(
                f"`seed` must be a non-negative integer or None. Received: "
                f"seed={seed!r}"
            )
        self.seed = int(seed)
        self._rewind_copy = None
        ids.check_combiner(combiner)
        self.combiner = combiner
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.quantized_bits = tuple(b for b in self.bit_candidates if b > 0)
        self.static_shapes = False
        self._recorder = None

    # ------------------------------------------------------------------ build
    def build(self, input_shape=None):
        if self.built:
            return
        rows, dim = self.input_dim, self.output_dim
        groups, k = self.num_groups, len(self.bit_candidates)
        # Variables are read in float32 under a mixed precision policy too
        # (the layer casts only its output, as Keras' Embedding does).
        weight = functools.partial(self.add_weight, **_compat.NO_AUTOCAST)
        state = {
            "trainable": False,
            "aggregation": _compat.only_first_replica(),
        }
        # Filled in chunks below: the initial values come from the seed.
        self._embeddings = weight(
            name="embeddings", shape=(rows, dim), initializer="zeros"
        )
        self._step_sizes = weight(
            name="step_sizes",
            shape=(len(self.quantized_bits),),
            initializer="ones",
        )
        self._offset = weight(name="offset", shape=(dim,), initializer="zeros")
        self._quantizer_scale = weight(
            name="quantizer_scale", shape=(), initializer="ones", **state
        )
        self._precision_logits = weight(
            name="precision_logits", shape=(groups, k), initializer="zeros"
        )
        self._group_ids = weight(
            name="group_ids",
            shape=(rows,),
            dtype=_group_id_dtype(groups),
            initializer="zeros",
            **state,
        )
        self._group_counts = weight(
            name="group_counts",
            shape=(groups,),
            dtype="int64",
            initializer="zeros",
            **state,
        )
        self._rewinds_to_copy = weight(
            name="rewinds_to_copy",
            shape=(),
            dtype="int32",
            initializer="zeros",
            **state,
        )
        self._group_weights = weight(
            name="group_weights", shape=(groups,), initializer="ones", **state
        )
        self._chosen_bits = weight(
            name="chosen_bits",
            shape=(groups,),
            dtype="int32",
            initializer="zeros",
            **state,
        )
        self._phase = weight(
            name="phase",
            shape=(),
            dtype="int32",
            initializer="zeros",
            **state,
        )
        self._temperature = weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(
                self.temperature or AUTO_TEMPERATURE_START
            ),
            **state,
        )
        # The search state of the best monitored epoch, in the layer so
        # that checkpoints (BackupAndRestore) keep it.
        self._kept = {
            name: weight(
                name=f"kept_{name}",
                shape=variable.shape,
                initializer="zeros",
                **state,
            )
            for name, variable in self._search_state().items()
        }
        self._kept_score = weight(
            name="kept_score",
            shape=(),
            dtype="float64",
            initializer=keras.initializers.Constant(float("nan")),
            **state,
        )
        self.built = True
        # Eagerly even when the first call that builds the layer is traced.
        with tf.init_scope():
            initial_table.assign(
                self._embeddings, self.embeddings_initializer, self.seed
            )
            self.initialize_step_sizes()

    # ------------------------------------------------------------------- call
    def call(self, inputs):
        if self._recorder is not None:
            self._recorder.record(ids.counted_ids(inputs, self))
            return ids.embed(inputs, self._zero_rows, self)
        phase = _compat.read(self._phase)
        probabilities = self._probabilities()
        if self.bit_penalty:
            is_search = tf.cast(tf.equal(phase, Phase.SEARCH), tf.float32)
            self.add_loss(
                self.bit_penalty * is_search * self._bit_cost(probabilities)
            )

        def rows_of(flat_ids):
            return self._rows(flat_ids, phase, probabilities)

        return ids.embed(inputs, rows_of, self)

    def _zero_rows(self, flat_ids):
        """What counting returns: zeros, no weight read."""
        return tf.zeros([tf.size(flat_ids), self.output_dim])

    def _rows(self, flat_ids, phase, probabilities):
        """The phase's float32 rows `(n, dim)` of a flat id vector."""
        static = self.static_shapes or _compat.in_xla_compilation()
        if not static:
            # Each distinct id is quantized once (XLA fuses the per-lookup
            # work instead, where sorting out duplicates costs more).
            flat_ids, positions = tf.unique(flat_ids)
        rows = _compat.gather_rows(self._embeddings, flat_ids)
        groups = tf.cast(
            _compat.gather_rows(self._group_ids, flat_ids), tf.int32
        )
        is_float = tf.cast(tf.equal(phase, Phase.FLOAT), rows.dtype)
        row_weights, row_chosen = self._row_weights(
            groups, phase, probabilities
        )
        mix = self._mix_static if static else self._mix_dynamic
        mixed = mix(rows, row_weights, row_chosen, phase)
        outputs = is_float * rows + mixed
        if not static:
            outputs = tf.gather(outputs, positions)
        return outputs

    def compute_output_shape(self, input_shape):
        return ids.output_shape(input_shape, self)

    def compute_mask(self, inputs, mask=None):
        return ids.output_mask(inputs, self)

    def _probabilities(self):
        logits = _compat.read(self._precision_logits)
        return tf.nn.softmax(logits / _compat.read(self._temperature), axis=-1)

    def _bit_cost(self, probabilities):
        """R = sum_g (1 / c_g) * sum_b p_{g,b} * b."""
        bits = tf.constant(self.bit_candidates, tf.float32)
        expected = tf.reduce_sum(probabilities * bits, axis=-1)
        return tf.reduce_sum(expected / _compat.read(self._group_weights))

    def _mixture_weights(self, phase, probabilities):
        """Per group, the weight of each candidate's quantized row."""
        chosen = _compat.read(self._chosen_bits)
        one_hot = tf.cast(
            tf.equal(chosen[:, None], tf.constant(self.bit_candidates)),
            probabilities.dtype,
        )
        is_search = tf.cast(tf.equal(phase, Phase.SEARCH), one_hot.dtype)
        is_fixed = tf.cast(tf.equal(phase, Phase.FIXED), one_hot.dtype)
        return is_search * probabilities + is_fixed * one_hot

    def _row_weights(self, groups, phase, probabilities):
        """Each row's weight for each candidate b > 0, and its chosen one.

        Returns `(row_weights, row_chosen)`: `(n, quantized K)` weights
        (the distribution while searching, a one-hot of the chosen bits
        when FIXED, zeros in FLOAT) and `(n, 1)` the position of the
        chosen candidate (any one, at weight 0, for a pruned group).
        """
        first = len(self.bit_candidates) - len(self.quantized_bits)
        weights = self._mixture_weights(phase, probabilities)[:, first:]
        chosen = tf.argmax(weights, axis=1, output_type=tf.int32)
        # Gathered here, not inside the static form's conditional: XLA
        # cannot size the sparse gradient of a gather from inside one.
        return tf.gather(weights, groups), tf.gather(chosen, groups)[:, None]

    def _mix_dynamic(self, rows, row_weights, row_chosen, phase):
        """sum over candidates b > 0 of weight_b * Q_b(rows).

        Only the candidates whose weight can be non-zero are quantized:
        every one while searching, each row's chosen one when FIXED, none
        in FLOAT. The column count depends on the phase variable, which
        is fast without XLA and very slow under it (see `_mix_static`).
        """
        every = tf.range(len(self.quantized_bits))
        is_search = tf.equal(phase, Phase.SEARCH)
        active = tf.logical_or(
            is_search,
            tf.logical_and(tf.equal(phase, Phase.FIXED), every < 1),
        )
        index = tf.where(
            is_search, tf.boolean_mask(every, active)[None, :], row_chosen
        )
        weights = tf.gather(row_weights, index, batch_dims=1)
        step_sizes, offset = self._quantizer_tensors()
        return self._quantized_sum(rows, weights, index, step_sizes, offset)

    def _mix_static(self, rows, row_weights, row_chosen, phase):
        """`_mix_dynamic` with static shapes, as XLA needs.

        A phase-dependent column count compiled by XLA into a training
        step that did not finish in minutes; instead a `tf.cond` on the
        phase picks between every candidate (SEARCH) and the chosen one
        (FIXED, and FLOAT at weight 0), each branch with its
        intermediates recomputed for the gradient (`_recomputed`).
        """
        every = tf.range(len(self.quantized_bits))[None]

        def search(rows, row_weights, step_sizes, offset):
            return self._quantized_sum(
                rows, row_weights, every, step_sizes, offset
            )

        def fixed(rows, row_weights, step_sizes, offset):
            chosen_weight = tf.gather(row_weights, row_chosen, batch_dims=1)
            return self._quantized_sum(
                rows, chosen_weight, row_chosen, step_sizes, offset
            )

        inputs = (rows, row_weights, *self._quantizer_tensors())
        return tf.cond(
            tf.equal(phase, Phase.SEARCH),
            lambda: _recomputed(search)(*inputs),
            lambda: _recomputed(fixed)(*inputs),
        )

    def _quantized_sum(self, rows, row_weights, index, step_sizes, offset):
        """sum over c of row_weights[n, c] * Q_{bits[index[., c]]}(rows[n]).

        `index` holds positions in `quantized_bits`: one row per id, or
        one row for all ids.
        """
        bits = self.quantized_bits

        def per_column(values):
            return tf.gather(tf.constant(values, rows.dtype), index)[..., None]

        ranges = [quantizer.integer_range(b) for b in bits]
        scales = [
            quantizer.gradient_scale(b, self.input_dim, self.output_dim)
            for b in bits
        ]
        quantized = quantizer.fake_quantize(
            rows[:, None, :],
            # A one-hot product rather than a gather: the step sizes then
            # get a dense gradient (sparse ones for this small variable
            # crashed MirroredStrategy's all-reduce).
            tf.reduce_sum(
                tf.one_hot(index, len(bits)) * step_sizes,
                axis=-1,
                keepdims=True,
            ),
            offset,
            lo=per_column([lo for lo, _ in ranges]),
            hi=per_column([hi for _, hi in ranges]),
            grad_scale=per_column(scales),
        )
        return tf.einsum("nc,ncd->nd", row_weights, quantized)

    def _quantizer_tensors(self):
        """(alpha of each quantized candidate, beta): stored x scale."""
        scale = _compat.read(self._quantizer_scale)
        return (
            scale * _compat.read(self._step_sizes),
            scale * _compat.read(self._offset),
        )

    @_built
    def quantizer_parameters(self) -> tuple:
        """The step sizes alpha_b (one per b > 0) and the offset beta.

        Returns:
            `(step_sizes, offset)`: float32 arrays of shapes
            `(len(quantized_bits),)` and `(output_dim,)`, in the table's
            units (the signed step sizes as trained; the quantizer uses
            |alpha_b|).
        """
        step_sizes, offset = self._quantizer_tensors()
        return step_sizes.numpy(), offset.numpy()

    @_built
    def set_quantizer_parameters(self, step_sizes, offset):
        """Sets alpha_b and beta (table units), keeping the current scale.

        Args:
            step_sizes: `len(quantized_bits)` floats, alpha_b for each
                `b > 0` of `bit_candidates` in increasing order.
            offset: `output_dim` floats, beta.
        """
        step_sizes = np.asarray(step_sizes, np.float32)
        offset = np.asarray(offset, np.float32)
        if step_sizes.shape != (len(self.quantized_bits),):
            raise ValueError(
                f"`step_sizes` must have shape ({len(self.quantized_bits)},),"
                f" one per bit-width in {self.quantized_bits}. Received: "
                f"shape {step_sizes.shape}"
            )
        if offset.shape != (self.output_dim,):
            raise ValueError(
                f"`offset` must have shape ({self.output_dim},). Received: "
                f"shape {offset.shape}"
            )
        scale = float(self._quantizer_scale.numpy())
        self._step_sizes.assign(step_sizes / scale)
        self._offset.assign(offset / scale)

    # -------------------------------------------------------------- the state
    @property
    @_built
    def embeddings(self):
        """The latent float table e, `(input_dim, output_dim)`."""
        return self._embeddings

    @_built
    def row_bits(self) -> np.ndarray:
        """Each row's chosen bit-width, int8 `(input_dim,)` (0 = pruned)."""
        chosen = self._chosen_bits.numpy().astype(np.int8)
        return chosen[self._group_ids.numpy()]

    @contextlib.contextmanager
    @_built
    def counting(self):
        """Within the block, calls record their ids instead of embedding.

        Each call checks its ids, records them in the `IdRecorder` this
        yields and returns zeros of the output shape; no weight is read,
        so counting costs no training state. `frequency.count_ids` runs a
        model's forward pass this way.

        Example:

        ```python
        with layer.counting() as recorder:
            model(batch)
        ids = recorder.take()  # one id tensor per call of `layer`
        ```
        """
        if self._recorder is not None:
            raise RuntimeError(f"Layer '{self.name}' is already counting.")
        self._recorder = IdRecorder()
        try:
            yield self._recorder
        finally:
            self._recorder = None

    # ------------------------------------------------- the best search epoch
    def _search_state(self) -> dict:
        """What the search learned: the precisions and the quantizer."""
        return {
            "precision_logits": self._precision_logits,
            "step_sizes": self._step_sizes,
            "offset": self._offset,
        }

    @property
    @_built
    def kept_score(self):
        """The score given to `keep_search_state`, None if nothing kept."""
        score = float(self._kept_score.numpy())
        return None if np.isnan(score) else score

    @_built
    def keep_search_state(self, score: float):
        """Keeps the precision logits, step sizes and offset with `score`
        (the monitored metric of a search epoch), replacing what was kept.
        They are layer weights, so a checkpoint of the model keeps them.
        """
        for name, variable in self._search_state().items():
            self._kept[name].assign(variable)
        self._kept_score.assign(float(score))

    @_built
    def restore_search_state(self):
        """Sets the search state back to the one kept, then forgets it."""
        if self.kept_score is None:
            raise ValueError(
                f"Layer '{self.name}' has no kept search state: call "
                "`keep_search_state` first."
            )
        for name, variable in self._search_state().items():
            variable.assign(self._kept[name])
        self.forget_search_state()

    @_built
    def forget_search_state(self):
        """Drops the kept search state (a new search starts)."""
        self._kept_score.assign(float("nan"))

    # ------------------------------------------------------------ the phases
    @property
    @_built
    def phase(self) -> Phase:
        """The current `Phase`."""
        return Phase(int(self._phase.numpy()))

    @_built
    def set_phase(self, phase: Phase):
        """Switches the layer to `phase` (a `Phase` or its integer value)."""
        self._phase.assign(int(Phase(phase)))

    @property
    @_built
    def has_frequencies(self) -> bool:
        """Whether id frequencies have been counted (`set_frequencies`)."""
        return bool(self._group_counts.numpy().any())

    @_built
    def set_frequencies(self, counts) -> frequency.FrequencyGroups:
        """Sets the id counts and groups the rows by frequency.

        Args:
            counts: Integer array `(input_dim,)`. Occurrences of each id.

        Returns:
            The `FrequencyGroups` now held by the layer.
        """
        counts = np.asarray(counts)
        if counts.shape != (self.input_dim,):
            raise ValueError(
                f"`counts` must have shape ({self.input_dim},). "
                f"Received: shape {counts.shape}"
            )
        groups = frequency.group_by_frequency(counts, self.num_groups)
        self._group_counts.assign(groups.group_counts)
        dtype = tf.as_dtype(self._group_ids.dtype).as_numpy_dtype
        self._group_ids.assign(groups.group_ids.astype(dtype))
        self._group_weights.assign(groups.group_weights)
        return groups

    @_built
    def initialize_step_sizes(self):
        """Sets each alpha_b from the table's current scale (LSQ init).

        The scale (mean |e|) becomes the unit in which alpha and beta are
        stored and trained; beta keeps its value in table units.
        """
        _, offset = self.quantizer_parameters()
        mean_abs = initial_table.mean_abs(self._embeddings)
        self._quantizer_scale.assign(mean_abs or 1.0)
        self.set_quantizer_parameters(
            [
                quantizer.initial_step_size(mean_abs or 1.0, b)
                for b in self.quantized_bits
            ],
            offset,
        )

    @_built
    def snapshot_embeddings(self):
        """Remembers the current table as the target of `rewind()`.

        When the table holds its initial values (a layer not trained yet)
        nothing is copied: `rewind` makes them again from `seed`. Else
        (pretrained or trained before) the table is copied to host memory,
        which a process that resumes from a checkpoint does not have.
        """
        initial = initial_table.holds_initial_values(
            self._embeddings, self.embeddings_initializer, self.seed
        )
        self._rewind_copy = None if initial else self._embeddings.numpy()
        self._rewinds_to_copy.assign(0 if initial else 1)

    @_built
    def rewind(self):
        """Resets the table to the values saved by `snapshot_embeddings`
        (by default the initial values)."""
        if self._rewind_copy is not None:
            self._embeddings.assign(self._rewind_copy)
        elif int(self._rewinds_to_copy.numpy()):
            raise RuntimeError(
                f"Layer '{self.name}': the rewind target was the table at "
                "the start of the interrupted fit, which was not its "
                "initial values and was kept in host memory only. Run the "
                "fit again from epoch 0, or pass rewind_embeddings=False "
                "to MPECallback to retrain from the searched table."
            )
        else:
            initial_table.assign(
                self._embeddings, self.embeddings_initializer, self.seed
            )

    @property
    @_built
    def current_temperature(self) -> float:
        """The temperature tau in use (see `temperature`)."""
        return float(self._temperature.numpy())

    @_built
    def set_search_length(self, steps: int, learning_rate: float):
        """With `temperature=None`, sets tau = learning_rate * steps /
        `LOGIT_TRAVEL` for a search of `steps` optimizer steps; a fixed
        temperature stays. `MPECallback` calls this as the search starts.
        """
        whole = isinstance(steps, numbers.Integral) and not isinstance(
            steps, bool
        )
        if not whole or steps < 1:
            raise ValueError(
                f"`steps` must be a positive integer. Received: steps={steps}"
            )
        if not 0 < learning_rate < float("inf"):
            raise ValueError(
                "`learning_rate` must be a positive number. Received: "
                f"learning_rate={learning_rate}"
            )
        if self.temperature is None:
            self._temperature.assign(learning_rate * steps / LOGIT_TRAVEL)

    @_built
    def precision_probabilities(self) -> np.ndarray:
        """The `(num_groups, K)` distribution over `bit_candidates`."""
        return self._probabilities().numpy()

    @_built
    def select_bits(
        self, rule: str = "threshold", seed=None, target_bits=None
    ) -> np.ndarray:
        """Chooses each group's bits (see `selection.py`) from the learned
        distributions; `fix_bits(select_bits(...))` applies the choice.

        Args:
            rule: String. "threshold" (reference), "argmax" or "sample".
            seed: Integer or None. Seed of the "sample" rule.
            target_bits: Float or None. A size budget in bits per element
                (32 / target compression), averaged over rows. When given,
                the bits come from `selection.budget_bits` (the steps
                the distributions make most probable, while they fit)
                and `rule` must be left at "threshold".

        Returns:
            int32 array `(num_groups,)` of the chosen bit-widths.
        """
        selection.check_target_bits(target_bits, self.bit_candidates, rule)
        probabilities = self.precision_probabilities()
        if target_bits is None:
            chosen = selection.select_bits(
                probabilities, self.bit_candidates, rule, seed
            )
        else:
            chosen = selection.budget_bits(
                probabilities,
                self.bit_candidates,
                self.group_sizes(),
                target_bits,
            )
        return chosen

    @_built
    def fix_bits(self, bits):
        """Fixes each group's bit-width (group 0 the rarest): FIXED phase.

        With `select_bits`'s choice after a search, or with precisions
        chosen another way (e.g. by frequency rank).

        Args:
            bits: `num_groups` integers, each one of `bit_candidates`.
        """
        bits = np.asarray(bits)
        if (
            bits.shape != (self.num_groups,)
            or not np.isin(bits, self.bit_candidates).all()
        ):
            raise ValueError(
                f"`bits` must be {self.num_groups} values from "
                f"bit_candidates={self.bit_candidates}. Received: {bits}"
            )
        self._chosen_bits.assign(bits.astype(np.int32))
        self.set_phase(Phase.FIXED)

    # ------------------------------------------------------------- reporting
    @_built
    def group_sizes(self) -> np.ndarray:
        """Rows per frequency group."""
        return np.bincount(
            self._group_ids.numpy(), minlength=self.num_groups
        ).astype(np.int64)

    @_built
    def bits_per_group(self) -> np.ndarray:
        """The chosen bits of each group (group 0 the rarest), int32
        `(num_groups,)`; meaningful in the FIXED phase."""
        return self._chosen_bits.numpy()

    @_built
    def group_summary(self) -> "GroupSummary":
        """Per frequency group: bits, expected bits, rows, lookups, weight."""
        bits = np.asarray(self.bit_candidates, np.float64)
        return GroupSummary(
            bits=self.bits_per_group(),
            expected_bits=self.precision_probabilities() @ bits,
            rows=self.group_sizes(),
            count=self._group_counts.numpy(),
            weight=self._group_weights.numpy(),
        )

    @_built
    def average_bits(self) -> float:
        """Average bits per table element in the current phase.

        32 in FLOAT, the expectation under the distribution in SEARCH, the
        chosen bits in FIXED; averaged over rows (pruned rows count 0).
        """
        phase = self.phase
        if phase == Phase.FLOAT:
            return 32.0
        groups = self.group_summary()
        bits = groups.bits if phase == Phase.FIXED else groups.expected_bits
        return float(np.dot(bits, groups.rows) / self.input_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            bit_candidates=list(self.bit_candidates),
            num_groups=self.num_groups,
            temperature=self.temperature,
            bit_penalty=self.bit_penalty,
            embeddings_initializer=keras.initializers.serialize(
                self.embeddings_initializer
            ),
            combiner=self.combiner,
            mask_zero=self.mask_zero,
            seed=self.seed,
        )
        return config
