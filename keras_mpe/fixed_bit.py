"""FixedBitEmbedding: the serving form of a searched MixedPrecisionEmbedding.

Each row is stored as packed unsigned codes at its group's bit-width
(`packing.py`); pruned rows (0 bits) store nothing. A lookup finds the
row's segment, gathers that row's bytes only, unpacks them and dequantizes:

    out_i = (code_i + lo_b) * step_b + beta      (0 when b = 0)

with b the row's bit-width, lo_b = -2^(b-1), step_b = |alpha_b| + 1e-10 and
beta the offset, exactly the FIXED-phase fake quantization, so outputs are
equal to the bit.

Rows are addressed through segments: maximal runs of consecutive ids at
the same bit-width, stored one after another. When the vocabulary is
frequency ordered (as an adapted StringLookup / IntegerLookup vocabulary
is), each frequency group is one id range, so there are at most as many
segments as groups and the metadata is a few bytes per group. Any other id
order still works, at the cost of more segments (up to one per row).

Variables:

| variable       | shape          | dtype   | role                          |
|----------------|----------------|---------|-------------------------------|
| packed_codes   | (bytes,)       | uint8   | all rows' codes, row by row   |
| segment_starts | (segments,)    | int32   | first id of each segment      |
| segment_bits   | (segments,)    | int32   | bit-width of its rows         |
| segment_bytes  | (segments,)    | int64   | byte offset of its first row  |
| step_sizes     | (8,)           | float32 | step_b for b = 1..8           |
| offset         | (dim,)         | float32 | beta                          |
"""

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import packing
from keras_mpe import quantizer
from keras_mpe.embedding import MAX_BITS
from keras_mpe.embedding import Phase

keras = _compat.keras


def _segments(row_bits):
    """Start index and bit-width of each run of equal bits."""
    change = np.flatnonzero(np.diff(row_bits)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    return starts, row_bits[starts]


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
        num_segments: Integer. Runs of consecutive ids at one bit-width.
        num_bytes: Integer. Size of the packed code buffer.
        groups: Dict of per-group lists ("bits", "rows", "count") from the
            search, for reports; not used by the lookup, not a variable.
        **kwargs: Base layer keyword arguments.

    Attributes:
        static_shapes: Boolean, False by default. True skips the
            de-duplication of ids (`tf.unique`), which is slow under XLA;
            `export_saved_model(jit_compile=True)` sets it.

    Input shape:
        Integer tensor of any shape `(...)`.

    Output shape:
        `(..., output_dim)`.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        num_segments,
        num_bytes,
        groups=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.num_segments = int(num_segments)
        self.num_bytes = int(num_bytes)
        self.groups = groups
        self.static_shapes = False
        # One row read never runs past the buffer: pad by the widest row
        # plus the byte that `unpack_codes` reads after the last code.
        self._read_width = packing.bytes_per_row(MAX_BITS, output_dim) + 1
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        state = {"trainable": False, "initializer": "zeros"}
        self._packed_codes = self.add_weight(
            name="packed_codes",
            shape=(self.num_bytes + self._read_width,),
            dtype="uint8",
            **state,
        )
        self._segment_starts = self.add_weight(
            name="segment_starts",
            shape=(self.num_segments,),
            dtype="int32",
            **state,
        )
        self._segment_bits = self.add_weight(
            name="segment_bits",
            shape=(self.num_segments,),
            dtype="int32",
            **state,
        )
        self._segment_bytes = self.add_weight(
            name="segment_bytes",
            shape=(self.num_segments,),
            dtype="int64",
            **state,
        )
        self._step_sizes = self.add_weight(
            name="step_sizes", shape=(MAX_BITS,), **state
        )
        self._offset = self.add_weight(
            name="offset", shape=(self.output_dim,), **state
        )
        self.built = True

    def call(self, inputs):
        ids = tf.cast(inputs, tf.int32)
        unique_ids = tf.reshape(ids, [-1])
        if not self.static_shapes:
            # Unpack each distinct id once, then spread the rows back out
            # (under XLA sorting out duplicates costs more than it saves).
            unique_ids, positions = tf.unique(unique_ids)
        starts = _compat.read(self._segment_starts)
        segment = tf.searchsorted(starts, unique_ids, side="right") - 1
        bits = tf.gather(_compat.read(self._segment_bits), segment)
        row_bytes = tf.cast((bits * self.output_dim + 7) // 8, tf.int64)
        first = tf.gather(_compat.read(self._segment_bytes), segment)
        first += tf.cast(unique_ids - tf.gather(starts, segment), tf.int64) * (
            row_bytes
        )
        offsets = tf.range(self._read_width, dtype=tf.int64)
        packed = tf.gather(
            _compat.tf_variable(self._packed_codes), first[:, None] + offsets
        )
        safe_bits = tf.maximum(bits, 1)
        codes = packing.unpack_codes(packed, safe_bits, self.output_dim)
        lo = -tf.bitwise.left_shift(1, safe_bits - 1)
        step = tf.gather(_compat.read(self._step_sizes), safe_bits - 1)
        offset = _compat.read(self._offset)
        values = tf.cast(codes + lo[:, None], tf.float32) * step[:, None]
        values = (values + offset) * tf.cast(bits > 0, tf.float32)[:, None]
        if not self.static_shapes:
            values = tf.gather(values, positions)
        shape = tf.concat([tf.shape(ids), [self.output_dim]], 0)
        return tf.cast(tf.reshape(values, shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    @classmethod
    def from_searched(cls, layer, chunk_rows: int = 1 << 20):
        """Converts a MixedPrecisionEmbedding in its FIXED phase.

        Args:
            layer: A `MixedPrecisionEmbedding` after selection.
            chunk_rows: Integer. Rows quantized at a time (bounds memory).

        Returns:
            A built `FixedBitEmbedding` with equal outputs.
        """
        if layer.phase != Phase.FIXED:
            raise ValueError(
                f"Layer '{layer.name}' is in phase {layer.phase.name}: only a "
                "layer whose precisions were chosen (FIXED, after "
                "MPECallback's selection or `select_bits`) can be converted."
            )
        dim = layer.output_dim
        row_bits = layer._chosen_bits.numpy()[layer._group_ids.numpy()]
        seg_starts, seg_bits = _segments(row_bits)
        row_bytes = (row_bits.astype(np.int64) * dim + 7) // 8
        row_first = np.concatenate([[0], np.cumsum(row_bytes)])
        num_bytes = int(row_first[-1])
        summary = layer.bits_per_group()
        groups = {k: summary[k].tolist() for k in ("bits", "rows", "count")}
        fixed = cls(
            layer.input_dim,
            dim,
            len(seg_starts),
            num_bytes,
            groups=groups,
            name=layer.name,
        )
        buffer = np.zeros(num_bytes + fixed._read_width, np.uint8)
        steps = tf.abs(_compat.read(layer._step_sizes)) + quantizer.STEP_EPSILON
        offset = _compat.read(layer._offset)
        step_of = dict(zip(layer.quantized_bits, steps.numpy(), strict=True))
        table = layer._embeddings
        for start in range(0, layer.input_dim, chunk_rows):
            rows = slice(start, min(start + chunk_rows, layer.input_dim))
            values = tf.convert_to_tensor(table[rows])
            for bits in np.unique(row_bits[rows]):
                if bits == 0:
                    continue
                members = np.flatnonzero(row_bits[rows] == bits)
                lo, hi = quantizer.integer_range(int(bits))
                scaled = (tf.gather(values, members) - offset) / step_of[bits]
                codes = tf.clip_by_value(tf.round(scaled), lo, hi) - lo
                packed = packing.pack_codes(
                    codes.numpy().astype(np.int64), int(bits)
                )
                first = row_first[start + members]
                buffer[first[:, None] + np.arange(packed.shape[1])] = packed
        step_table = np.ones(MAX_BITS, np.float32)
        for bits, step in step_of.items():
            step_table[bits - 1] = step
        fixed._packed_codes.assign(buffer)
        fixed._segment_starts.assign(seg_starts.astype(np.int32))
        fixed._segment_bits.assign(seg_bits.astype(np.int32))
        fixed._segment_bytes.assign(row_first[seg_starts])
        fixed._step_sizes.assign(step_table)
        fixed._offset.assign(offset.numpy())
        return fixed

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            num_segments=self.num_segments,
            num_bytes=self.num_bytes,
            groups=self.groups,
        )
        return config
