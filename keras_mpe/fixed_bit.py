"""FixedBitEmbedding: the serving form of a searched MixedPrecisionEmbedding.

Each row is stored as packed unsigned codes at its group's bit-width
(`packing.py`); pruned rows (0 bits) store nothing. A lookup finds the
row's segment, gathers that row's bytes only, unpacks them and dequantizes:

    out_i = (code_i + lo_b) * step_b + beta      (0 when b = 0)

with b the row's bit-width, lo_b = -2^(b-1), step_b = |alpha_b| + 1e-10 and
beta the offset, exactly the FIXED-phase fake quantization, so outputs are
equal to the bit.

Two indexes find a row's bytes; conversion keeps the smaller one.

- "segments": maximal runs of consecutive ids at the same bit-width, rows
  stored in id order. When the vocabulary is frequency ordered (as an
  adapted StringLookup / IntegerLookup vocabulary is), each frequency
  group is one id range: at most one segment per group, 16 bytes each.
- "ranks", for any other id order: rows stored class by class (a class is
  one bit-width, pruned included), each row's class as a k-bit code,
  k = ceil(log2(classes)), in k bit-planes of 64-bit words, plus per block
  of 2048 rows each class's row count before the block. A row's slot in
  its class is that count plus a popcount over its block's words. Cost:
  k bits per row plus 32 x classes bits per 2048 rows (0.11 bits per row
  for 7 classes).

Variables (C classes, P = max(1, k) planes, B = ceil(rows / 2048)):

| variable       | shape          | dtype   | role                          |
|----------------|----------------|---------|-------------------------------|
| packed_codes   | (bytes,)       | uint8   | all rows' codes, row by row   |
| step_sizes     | (8,)           | float32 | step_b for b = 1..8           |
| offset         | (dim,)         | float32 | beta                          |
| segment_starts | (segments,)    | int32   | "segments": first id of each  |
| segment_bits   | (segments,)    | int32   | "segments": its bit-width     |
| segment_bytes  | (segments,)    | int64   | "segments": its first byte    |
| class_planes   | (P, 32 B)      | int64   | "ranks": class code bit-planes|
| block_counts   | (B, C)         | int32   | "ranks": rows per class before|
| class_bits     | (C,)           | int32   | "ranks": bit-width of a class |
| class_bytes    | (C,)           | int64   | "ranks": first byte of a class|
"""

import math

import numpy as np
import tensorflow as tf

from keras_mpe import _compat
from keras_mpe import packing
from keras_mpe import quantizer
from keras_mpe.embedding import MAX_BITS
from keras_mpe.embedding import Phase

keras = _compat.keras
INDEXES = ("segments", "ranks")
WORDS_PER_BLOCK = 32
ROWS_PER_BLOCK = 64 * WORDS_PER_BLOCK


def _segments(row_bits):
    """Start index and bit-width of each run of equal bits."""
    change = np.flatnonzero(np.diff(row_bits)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    return starts, row_bits[starts]


def _num_planes(num_classes) -> int:
    return max(1, math.ceil(math.log2(max(num_classes, 1))))


def _rank_index_bytes(rows, num_classes) -> int:
    blocks = -(-rows // ROWS_PER_BLOCK)
    planes = _num_planes(num_classes)
    return (
        8 * planes * WORDS_PER_BLOCK * blocks
        + 4 * blocks * num_classes
        + 12 * num_classes
    )


def _class_planes(codes, planes, words) -> np.ndarray:
    """Bit j of each row's class code, 64 rows per little-endian word."""
    bits = (codes[None, :] >> np.arange(planes)[:, None]) & 1
    padded = np.zeros((planes, words * 64), np.uint8)
    padded[:, : codes.size] = bits
    packed = np.packbits(padded, axis=1, bitorder="little")
    return packed.view("<u8").astype(np.uint64).view(np.int64)


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
        num_bytes: Integer. Size of the packed code buffer.
        index: "segments" or "ranks" (see the module docstring).
        num_segments: Integer. Runs of consecutive ids at one bit-width
            ("segments" index).
        num_classes: Integer. Distinct bit-widths ("ranks" index).
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
        num_bytes,
        index="segments",
        num_segments=0,
        num_classes=0,
        groups=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if index not in INDEXES:
            raise ValueError(
                f"`index` must be one of {INDEXES}. Received: index={index!r}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.num_bytes = int(num_bytes)
        self.index = index
        self.num_segments = int(num_segments)
        self.num_classes = int(num_classes)
        self.groups = groups
        self.static_shapes = False
        # One row read never runs past the buffer: pad by the widest row
        # plus the byte that `unpack_codes` reads after the last code.
        self._read_width = packing.bytes_per_row(MAX_BITS, output_dim) + 1
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return

        def state(name, shape, dtype="float32"):
            return self.add_weight(
                name=name,
                shape=shape,
                dtype=dtype,
                trainable=False,
                initializer="zeros",
            )

        self._packed_codes = state(
            "packed_codes", (self.num_bytes + self._read_width,), "uint8"
        )
        if self.index == "segments":
            segments = (self.num_segments,)
            self._segment_starts = state("segment_starts", segments, "int32")
            self._segment_bits = state("segment_bits", segments, "int32")
            self._segment_bytes = state("segment_bytes", segments, "int64")
        else:
            blocks = -(-self.input_dim // ROWS_PER_BLOCK)
            planes = (_num_planes(self.num_classes), blocks * WORDS_PER_BLOCK)
            classes = (self.num_classes,)
            self._class_planes = state("class_planes", planes, "int64")
            self._block_counts = state(
                "block_counts", (blocks, self.num_classes), "int32"
            )
            self._class_bits = state("class_bits", classes, "int32")
            self._class_bytes = state("class_bytes", classes, "int64")
        self._step_sizes = state("step_sizes", (MAX_BITS,))
        self._offset = state("offset", (self.output_dim,))
        self.built = True

    def call(self, inputs):
        ids = tf.cast(inputs, tf.int32)
        unique_ids = tf.reshape(ids, [-1])
        if not self.static_shapes:
            # Unpack each distinct id once, then spread the rows back out
            # (under XLA sorting out duplicates costs more than it saves).
            unique_ids, positions = tf.unique(unique_ids)
        if self.index == "segments":
            first, bits = self._locate_by_segments(unique_ids)
        else:
            first, bits = self._locate_by_ranks(unique_ids)
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

    def _locate_by_segments(self, ids):
        """First byte and bit-width of each id's row."""
        starts = _compat.read(self._segment_starts)
        segment = tf.searchsorted(starts, ids, side="right") - 1
        bits = tf.gather(_compat.read(self._segment_bits), segment)
        row_bytes = tf.cast((bits * self.output_dim + 7) // 8, tf.int64)
        first = tf.gather(_compat.read(self._segment_bytes), segment)
        rank = tf.cast(ids - tf.gather(starts, segment), tf.int64)
        return first + rank * row_bytes, bits

    def _locate_by_ranks(self, ids):
        """First byte and bit-width of each id's row (rank/select)."""
        planes = _compat.read(self._class_planes)
        word = ids // 64
        bit = tf.cast(ids % 64, tf.uint64)
        block = ids // ROWS_PER_BLOCK
        # Each id's class code, bit j from plane j.
        own = tf.bitcast(tf.gather(planes, word, axis=1), tf.uint64)
        one = tf.constant(1, tf.uint64)
        code = tf.zeros_like(ids)
        for j in range(planes.shape[0]):
            set_j = tf.bitwise.bitwise_and(
                tf.bitwise.right_shift(own[j], bit), one
            )
            code += tf.bitwise.left_shift(tf.cast(set_j, tf.int32), j)
        # Rows of that class before the id within its block: AND the
        # planes (inverted where the code has a 0), mask, popcount.
        local = tf.range(WORDS_PER_BLOCK)
        words = tf.gather(
            planes, block[:, None] * WORDS_PER_BLOCK + local, axis=1
        )
        words = tf.bitcast(words, tf.uint64)  # (P, n, 32)
        all_ones = tf.constant(np.iinfo(np.uint64).max, tf.uint64)
        match = tf.fill(tf.shape(words)[1:], all_ones)
        for j in range(planes.shape[0]):
            wanted = tf.equal(tf.bitwise.bitwise_and(code, 1 << j), 0)
            plane = tf.where(
                wanted[:, None], tf.bitwise.invert(words[j]), words[j]
            )
            match = tf.bitwise.bitwise_and(match, plane)
        partial = tf.bitwise.invert(tf.bitwise.left_shift(all_ones, bit))
        own_word = (word - block * WORDS_PER_BLOCK)[:, None]
        mask = tf.where(
            local[None, :] < own_word,
            all_ones,
            tf.where(
                local[None, :] == own_word,
                partial[:, None],
                tf.constant(0, tf.uint64),
            ),
        )
        counts = tf.raw_ops.PopulationCount(
            x=tf.bitwise.bitwise_and(match, mask)
        )
        rank = tf.reduce_sum(tf.cast(counts, tf.int64), axis=1)
        before = tf.gather_nd(
            _compat.read(self._block_counts), tf.stack([block, code], 1)
        )
        bits = tf.gather(_compat.read(self._class_bits), code)
        row_bytes = tf.cast((bits * self.output_dim + 7) // 8, tf.int64)
        first = tf.gather(_compat.read(self._class_bytes), code)
        return first + (tf.cast(before, tf.int64) + rank) * row_bytes, bits

    def rows_per_bits(self) -> dict:
        """Rows stored at each bit-width (0 = pruned)."""
        if self.index == "segments":
            starts = self._segment_starts.numpy().astype(np.int64)
            bits = self._segment_bits.numpy()
            lengths = np.diff(np.append(starts, self.input_dim))
        else:
            bits = self._class_bits.numpy()
            planes = self._class_planes.numpy()
            stream = np.unpackbits(
                planes.astype("<i8").view(np.uint8), axis=1, bitorder="little"
            )[:, : self.input_dim]
            codes = (stream << np.arange(len(stream))[:, None]).sum(0)
            lengths = np.bincount(codes, minlength=len(bits))
        return {int(b): int(lengths[bits == b].sum()) for b in np.unique(bits)}

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    @classmethod
    def from_searched(cls, layer, chunk_rows: int = 1 << 20, index="auto"):
        """Converts a MixedPrecisionEmbedding in its FIXED phase.

        Args:
            layer: A `MixedPrecisionEmbedding` after selection.
            chunk_rows: Integer. Rows quantized at a time (bounds memory).
            index: "auto" (the smaller index), "segments" or "ranks".

        Returns:
            A built `FixedBitEmbedding` with equal outputs.
        """
        if layer.phase != Phase.FIXED:
            raise ValueError(
                f"Layer '{layer.name}' is in phase {layer.phase.name}: only a "
                "layer whose precisions were chosen (FIXED, after "
                "MPECallback's selection or `select_bits`) can be converted."
            )
        if index not in ("auto", *INDEXES):
            raise ValueError(
                f"`index` must be 'auto' or one of {INDEXES}. "
                f"Received: index={index!r}"
            )
        dim = layer.output_dim
        row_bits = layer._chosen_bits.numpy()[layer._group_ids.numpy()]
        seg_starts, seg_bits = _segments(row_bits)
        classes, class_of_row = np.unique(row_bits, return_inverse=True)
        if index == "auto":
            by_segments = 16 * len(seg_starts)
            by_ranks = _rank_index_bytes(layer.input_dim, len(classes))
            index = "segments" if by_segments <= by_ranks else "ranks"
        row_bytes = (row_bits.astype(np.int64) * dim + 7) // 8
        if index == "segments":  # rows in id order
            row_first = np.concatenate([[0], np.cumsum(row_bytes)])[:-1]
        else:  # rows class by class, in id order within a class
            order = np.argsort(class_of_row, kind="stable")
            row_first = np.empty_like(row_bytes)
            row_first[order] = np.concatenate(
                [[0], np.cumsum(row_bytes[order])]
            )[:-1]
        num_bytes = int(row_bytes.sum())
        summary = layer.bits_per_group()
        groups = {k: summary[k].tolist() for k in ("bits", "rows", "count")}
        fixed = cls(
            layer.input_dim,
            dim,
            num_bytes,
            index=index,
            num_segments=len(seg_starts) if index == "segments" else 0,
            num_classes=len(classes) if index == "ranks" else 0,
            groups=groups,
            name=layer.name,
        )
        buffer = np.zeros(num_bytes + fixed._read_width, np.uint8)
        steps, offset = layer.quantizer_parameters()
        steps = tf.abs(tf.constant(steps)) + quantizer.STEP_EPSILON
        offset = tf.constant(offset)
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
        fixed._step_sizes.assign(step_table)
        fixed._offset.assign(offset.numpy())
        if index == "segments":
            fixed._segment_starts.assign(seg_starts.astype(np.int32))
            fixed._segment_bits.assign(seg_bits.astype(np.int32))
            fixed._segment_bytes.assign(row_first[seg_starts])
        else:
            fixed._assign_ranks(classes, class_of_row, row_bytes)
        return fixed

    def _assign_ranks(self, classes, class_of_row, row_bytes):
        blocks = self._block_counts.shape[0]
        planes = self._class_planes.shape[0]
        self._class_planes.assign(
            _class_planes(class_of_row, planes, blocks * WORDS_PER_BLOCK)
        )
        block_rows = np.zeros((blocks * ROWS_PER_BLOCK,), np.int64) - 1
        block_rows[: class_of_row.size] = class_of_row
        per_block = np.stack(
            [
                (block_rows.reshape(blocks, -1) == c).sum(1)
                for c in range(len(classes))
            ],
            axis=1,
        )
        before = np.cumsum(per_block, axis=0) - per_block
        self._block_counts.assign(before.astype(np.int32))
        self._class_bits.assign(classes.astype(np.int32))
        class_sizes = np.bincount(
            class_of_row, weights=row_bytes, minlength=len(classes)
        ).astype(np.int64)
        self._class_bytes.assign(np.cumsum(class_sizes) - class_sizes)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            num_bytes=self.num_bytes,
            index=self.index,
            num_segments=self.num_segments,
            num_classes=self.num_classes,
            groups=self.groups,
        )
        return config
