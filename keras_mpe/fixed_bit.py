"""FixedBitEmbedding: the serving form of a searched MixedPrecisionEmbedding.

Rows are stored as integer codes and pruned rows (0 bits) store nothing.
A lookup finds each id's class (its bit-width) and slot with a row index
(`row_index.py`: "segments" for frequency-ordered vocabularies, "ranks"
for any id order, "direct" for speed), reads those rows' codes and
decodes them with the quantizer's one formula:

    out_i = (code_i + lo_b) * step_b + beta      (0 when b = 0)

with lo_b = -2^(b-1), step_b = |alpha_b| + 1e-10 and beta the offset,
exactly the FIXED-phase fake quantization, so outputs are equal to the
bit. Two code layouts (`storage.py`), chosen per model:

- "packed" (the default, the smallest): the rows at b bits form one
  `(rows_b, ceil(b * dim / 8))` uint8 matrix per class. A lookup gathers
  each class's rows apart and unpacks them at the class's constant width
  (gathering a variable number of single bytes per row and unpacking at
  per-row widths cost about twice as much).
- "bytes" (speed first): every kept row as `dim` signed bytes in one
  matrix, classes one after another. A lookup is one gather for all ids,
  a cast, and a multiply-add by each id's class step and offset.

Variables (the index adds its own, see `row_index.py`):

| variable        | shape             | dtype   | role                       |
|-----------------|-------------------|---------|----------------------------|
| codes_<b>bit    | (rows_b, bytes_b) | uint8   | "packed": the rows at b    |
|                 |                   |         | bits                       |
| codes           | (1 + kept rows,   | uint8   | "bytes": a row for pruned  |
|                 | dim)              |         | ids, then every kept row,  |
|                 |                   |         | signed codes as int8       |
| step_sizes      | (8,)              | float32 | alpha_b for b = 1..8       |
| offset          | (dim,)            | float32 | beta                       |

Classes are the distinct bit-widths in increasing order (`class_rows`).
"""

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import ids
from keras_mpe import quantizer
from keras_mpe import row_index
from keras_mpe import storage
from keras_mpe.embedding import Phase

keras = _compat.keras
MAX_BITS = storage.MAX_BITS


def _unfused(values):
    """`values` (n, D) unchanged, computed apart from their consumers.

    XLA fuses the decoding into whatever reads the layer's output. When
    that is a Flatten or a Concatenate of the fields (most CTR models),
    the fused loop runs over the flattened layout and took longer
    (`benchmarks/serving_speed.py`, 4096 x 26 ids, MLP 256-128, predict
    against the float model's: "packed" 1.63-1.68x, 1.24-1.27x with
    this; "bytes" 1.01-1.08x, 0.97-0.99x with this). A dot is never
    fused; by the identity it is exact (each output is one value times 1
    plus zeros).
    """
    return tf.matmul(values, tf.eye(values.shape[-1], dtype=values.dtype))


@_compat.register_serializable
class FixedBitEmbedding(keras.layers.Layer):
    """An embedding stored as packed codes at a per-row bit-width.

    Built from a searched and retrained `MixedPrecisionEmbedding` with
    `FixedBitEmbedding.from_searched(layer)` (or `keras_mpe.convert`).

    Example:

    ```python
    serving = keras_mpe.FixedBitEmbedding.from_searched(mpe_layer)
    serving(ids)  # == mpe_layer(ids) in its FIXED phase
    ```

    Args:
        input_dim: Integer. Size of the vocabulary.
        output_dim: Integer. Width of each row.
        class_rows: Sequence of `(bits, rows)` pairs: the rows stored at
            each bit-width (0 = pruned), one pair per class.
        index: "segments", "ranks" or "direct" (see `row_index.py`); the
            "bytes" layout reads "direct" only.
        num_segments: Integer. Runs of consecutive ids at one bit-width
            ("segments" index).
        layout: String. How codes are stored (see `storage.LAYOUTS`):
            "packed" (the smallest) or "bytes" (the fastest).
        combiner: None, "sum", "mean" or "sqrtn", as in
            `MixedPrecisionEmbedding` (`ids.py`).
        mask_zero: Boolean. Id 0 is padding, as in
            `MixedPrecisionEmbedding`.
        groups: Dict of per-group lists ("bits", "rows", "count") from the
            search, for reports; not used by the lookup, not a variable.
        **kwargs: Base layer keyword arguments.

    Attributes:
        static_shapes: Boolean, False by default. As in
            `MixedPrecisionEmbedding`: calls traced for XLA keep static
            shapes (no `tf.unique`, no `DynamicPartition` of ids by
            class, each class read for every id instead); True forces
            that form everywhere.

    Input and output shapes: as `MixedPrecisionEmbedding`'s (dense,
    ragged or sparse ids; pooled with a `combiner`).
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        class_rows,
        index="segments",
        num_segments=0,
        groups=None,
        layout="packed",
        combiner=None,
        mask_zero=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._layout = storage.code_layout(layout)
        if index not in self._layout.indexes:
            raise ValueError(
                f"With layout={layout!r}, `index` must be one of "
                f"{self._layout.indexes}. Received: index={index!r}"
            )
        pairs = sorted((int(b), int(r)) for b, r in class_rows)
        bits = [b for b, _ in pairs]
        if (
            not pairs
            or len(set(bits)) != len(bits)
            or not all(0 <= b <= MAX_BITS and r > 0 for b, r in pairs)
            or sum(r for _, r in pairs) != input_dim
        ):
            raise ValueError(
                "`class_rows` must be (bits, rows) pairs with distinct bits "
                f"from 0 to {MAX_BITS}, rows > 0, rows summing to "
                f"input_dim={input_dim}. Received: class_rows={class_rows}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.class_rows = pairs
        self.index = index
        self.num_segments = int(num_segments)
        self.groups = groups
        self.layout = layout
        ids.check_combiner(combiner)
        self.combiner = combiner
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self._row_index = row_index.INDEXES[index](
            self.input_dim, len(pairs), self.num_segments
        )
        self.static_shapes = False
        self.build()

    @property
    def num_bytes(self) -> int:
        """Bytes of stored codes (the payload, rounded up per row)."""
        return sum(
            rows * self._layout.row_bytes(bits, self.output_dim)
            for bits, rows in self.class_rows
        )

    def build(self, input_shape=None):
        if self.built:
            return

        def state(name, shape, dtype="float32"):
            return self.add_weight(
                **_compat.NO_AUTOCAST,  # float32 under mixed precision
                name=name,
                shape=shape,
                dtype=dtype,
                trainable=False,
                initializer="zeros",
            )

        stored = [(b, rows) for b, rows in self.class_rows if b > 0]
        if self._layout.shared_matrix:
            # Row 0 is read by every pruned id (see `_rows_shared`).
            kept = 1 + sum(rows for _, rows in stored)
            width = self._layout.row_bytes(MAX_BITS, self.output_dim)
            self._codes = [state("codes", (kept, width), "uint8")]
        else:
            # A list (not a dict keyed by bits: tf_keras cannot checkpoint
            # variables under non-string keys), in class order.
            self._codes = [
                state(
                    f"codes_{bits}bit",
                    (rows, self._layout.row_bytes(bits, self.output_dim)),
                    "uint8",
                )
                for bits, rows in stored
            ]
        self._row_index.build(state)
        self._step_sizes = state("step_sizes", (MAX_BITS,))
        self._offset = state("offset", (self.output_dim,))
        self.built = True

    def call(self, inputs):
        return ids.embed(inputs, self._rows, self)

    def _rows(self, flat_ids):
        """The decoded float32 rows `(n, dim)` of a flat id vector."""
        if self._layout.shared_matrix:
            return self._rows_shared(flat_ids)
        xla = _compat.in_xla_compilation()
        static = self.static_shapes or xla
        if not static:
            # Unpack each distinct id once, then spread the rows back out.
            flat_ids, positions = tf.unique(flat_ids)
        classes, slots = self.locate(flat_ids)
        if static:
            values = self._rows_static(classes, slots)
            return _unfused(values) if xla else values
        values = self._rows_by_class(classes, slots)
        return tf.gather(values, positions)

    def compute_mask(self, inputs, mask=None):
        return ids.output_mask(inputs, self)

    def _rows_shared(self, flat_ids):
        """One gather from the shared matrix for every id, then each id's
        class step ((C, dim) table gathered by class: a broadcast multiply
        by a per-id step cost more in TF's CPU kernels) and the offset.

        Pruned ids read row 0, whose codes are all 1, with the "step"
        -beta: 1 * -beta + beta is exactly 0, and no id needs an offset
        of its own."""
        classes, rows = self.locate(flat_ids)
        codes = self._layout.load(_compat.gather_rows(self._codes[0], rows))
        offset = _compat.read(self._offset)
        steps = tf.gather(
            _compat.read(self._step_sizes),
            [max(bits, 1) - 1 for bits, _ in self.class_rows],
        )
        steps = quantizer.effective_step(steps)[:, None]
        stored = tf.constant([[bits > 0] for bits, _ in self.class_rows])
        steps = tf.where(stored, steps, -offset)  # broadcast: (C, dim)
        values = quantizer.dequantize(codes, tf.gather(steps, classes), offset)
        return _unfused(values) if _compat.in_xla_compilation() else values

    def _dequantized(self, bits, slots):
        """The rows at `slots` of the b-bit class, as floats."""
        stored = [b for b, _ in self.class_rows if b > 0]  # as _codes
        rows = _compat.gather_rows(self._codes[stored.index(bits)], slots)
        codes = self._layout.load(rows, bits, self.output_dim)
        step = _compat.read(self._step_sizes)[bits - 1]
        return quantizer.decode(codes, step, _compat.read(self._offset), bits)

    def _rows_by_class(self, classes, slots):
        """Splits the ids by class, unpacks each class's rows, rejoins."""
        count = len(self.class_rows)
        slots = tf.dynamic_partition(slots, classes, count)
        where = tf.dynamic_partition(tf.range(tf.size(classes)), classes, count)
        parts = [
            self._dequantized(bits, part)
            if bits
            else tf.zeros([tf.size(part), self.output_dim])
            for (bits, _), part in zip(self.class_rows, slots, strict=True)
        ]
        return tf.dynamic_stitch(where, parts)

    def _rows_static(self, classes, slots):
        """Every class's candidate row for every id, the right one kept."""
        values = tf.zeros([tf.size(classes), self.output_dim])
        for code, (bits, _) in enumerate(self.class_rows):
            if bits:
                member = tf.equal(classes, code)
                rows = self._dequantized(bits, tf.where(member, slots, 0))
                values = tf.where(member[:, None], rows, values)
        return values

    def locate(self, ids):
        """Each id's class (position in `class_rows`) and slot (row in
        that class's codes), as two int32 tensors shaped like `ids`."""
        return self._row_index.locate(tf.cast(ids, tf.int32))

    def rows_per_bits(self) -> dict:
        """Rows stored at each bit-width (0 = pruned)."""
        return dict(self.class_rows)

    def compute_output_shape(self, input_shape):
        return ids.output_shape(input_shape, self)

    @classmethod
    def from_searched(
        cls,
        layer,
        chunk_rows: int = 1 << 18,
        index="auto",
        layout="packed",
    ):
        """Converts a MixedPrecisionEmbedding in its FIXED phase.

        Args:
            layer: A `MixedPrecisionEmbedding` after selection.
            chunk_rows: Integer. Rows encoded at a time (bounds memory).
            index: "auto" (for "packed" the smaller of "segments" and
                "ranks"; for "bytes" "direct", its only index), "segments",
                "ranks" or "direct".
            layout: String. How codes are stored (`storage.LAYOUTS`):
                "packed" (the smallest) or "bytes" (the fastest).

        Returns:
            A built `FixedBitEmbedding` with equal outputs.
        """
        if layer.phase != Phase.FIXED:
            raise ValueError(
                f"Layer '{layer.name}' is in phase {layer.phase.name}: only a "
                "layer whose precisions were chosen (FIXED, after "
                "MPECallback's selection or `select_bits`) can be converted."
            )
        layout_class = storage.code_layout(layout)
        if index == "auto":
            index = layout_class.auto_index
        elif index not in layout_class.indexes:
            raise ValueError(
                f"With layout={layout!r}, `index` must be 'auto' or one of "
                f"{layout_class.indexes}. Received: index={index!r}"
            )
        plan = storage.plan_storage(layer.row_bits())
        chosen_index = row_index.choose_index(plan, index)
        summary = layer.group_summary()
        fixed = cls(
            layer.input_dim,
            layer.output_dim,
            plan.class_rows,
            index=chosen_index.kind,
            **chosen_index.layer_config(),
            groups={
                k: getattr(summary, k).tolist()
                for k in ("bits", "rows", "count")
            },
            layout=layout,
            combiner=layer.combiner,
            mask_zero=layer.mask_zero,
            name=layer.name,
        )
        fixed._assign(plan, layer, chunk_rows)
        return fixed

    def _assign(self, plan, layer, chunk_rows):
        """Encodes `layer`'s table into the codes, fills the index."""
        steps, offset = layer.quantizer_parameters()
        step_of = dict(zip(layer.quantized_bits, steps, strict=True))
        stored = [
            np.zeros(variable.shape, np.uint8) for variable in self._codes
        ]
        stored_bits = [bits for bits, _ in plan.class_rows if bits > 0]
        if self._layout.shared_matrix:
            plan = plan.in_one_matrix()
            stored[0][0] = 1  # the pruned ids' row: signed code 1 everywhere
        for start in range(0, plan.rows, chunk_rows):
            stop = min(start + chunk_rows, plan.rows)
            values = tf.convert_to_tensor(layer.embeddings[start:stop])
            for position, bits in enumerate(stored_bits):
                members = np.flatnonzero(plan.row_bits[start:stop] == bits)
                if members.size == 0:
                    continue
                codes = quantizer.encode(
                    tf.gather(values, members), step_of[bits], offset, bits
                )
                matrix = stored[0 if self._layout.shared_matrix else position]
                slots = plan.slot_of_row[start + members]
                matrix[slots] = self._layout.store(codes.numpy(), bits)
        for variable, values in zip(self._codes, stored, strict=True):
            variable.assign(values)
        step_table = np.ones(MAX_BITS, np.float32)
        for bits, step in step_of.items():
            step_table[bits - 1] = step
        self._step_sizes.assign(step_table)
        self._offset.assign(offset)
        self._row_index.assign(plan)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            class_rows=[list(pair) for pair in self.class_rows],
            index=self.index,
            num_segments=self.num_segments,
            groups=self.groups,
            layout=self.layout,
            combiner=self.combiner,
            mask_zero=self.mask_zero,
        )
        return config
