"""FixedBitEmbedding: the serving form of a searched MixedPrecisionEmbedding.

Rows are stored as packed unsigned codes (`packing.py`), one matrix per
bit-width class: the rows at b bits form a `(rows_b, ceil(b * dim / 8))`
uint8 matrix, and pruned rows (0 bits) store nothing. A lookup finds each
id's class and its slot (row) in that class's matrix, gathers those rows
only, unpacks them at the class's constant width and dequantizes:

    out_i = (code_i + lo_b) * step_b + beta      (0 when b = 0)

with lo_b = -2^(b-1), step_b = |alpha_b| + 1e-10 and beta the offset,
exactly the FIXED-phase fake quantization, so outputs are equal to the
bit. Whole-row gathers and constant-width unpacking are what make the
lookup fast: gathering a variable number of single bytes per row and
unpacking at per-row widths cost about twice as much.

Two indexes give an id's class and slot; conversion keeps the smaller.

- "segments": maximal runs of consecutive ids at the same bit-width,
  each with its class and the slot of its first id (12 bytes per run).
  When the vocabulary is frequency ordered (as an adapted StringLookup /
  IntegerLookup vocabulary is), each frequency group is one id range: at
  most one segment per group.
- "ranks", for any other id order: each row's class as a k-bit code,
  k = ceil(log2(classes)), in k bit-planes of 64-bit words, plus per
  block of 2048 rows each class's row count before the block. A row's
  slot is that count plus a popcount over its block's words. Cost: k bits
  per row plus 32 x classes bits per 2048 rows (0.11 bits per row for 7
  classes).

Variables (C classes, P = max(1, k) planes, B = ceil(rows / 2048)):

| variable        | shape             | dtype   | role                       |
|-----------------|-------------------|---------|----------------------------|
| codes_<b>bit    | (rows_b, bytes_b) | uint8   | the rows at b bits, packed |
| step_sizes      | (8,)              | float32 | step_b for b = 1..8        |
| offset          | (dim,)            | float32 | beta                       |
| segment_starts  | (segments,)       | int32   | "segments": first id       |
| segment_classes | (segments,)       | int32   | "segments": its class      |
| segment_slots   | (segments,)       | int32   | "segments": its first slot |
| class_planes    | (P, 32 B)         | int64   | "ranks": class code planes |
| block_counts    | (B, C)            | int32   | "ranks": rows per class    |
|                 |                   |         | before each block          |

Classes are the distinct bit-widths in increasing order (`class_rows`).
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
SEGMENT_BYTES = 12


def _segment_starts(row_bits):
    """First index of each run of equal bits."""
    change = np.flatnonzero(np.diff(row_bits)) + 1
    return np.concatenate([[0], change]).astype(np.int64)


def _num_planes(num_classes) -> int:
    return max(1, math.ceil(math.log2(max(num_classes, 1))))


def _rank_index_bytes(rows, num_classes) -> int:
    blocks = -(-rows // ROWS_PER_BLOCK)
    planes = _num_planes(num_classes)
    return 8 * planes * WORDS_PER_BLOCK * blocks + 4 * blocks * num_classes


def _class_planes(codes, planes, words) -> np.ndarray:
    """Bit j of each row's class code, 64 rows per little-endian word."""
    shifts = np.arange(planes, dtype=np.uint8)[:, None]
    bits = (codes.astype(np.uint8)[None, :] >> shifts) & 1
    padded = np.zeros((planes, words * 64), np.uint8)
    padded[:, : codes.size] = bits
    packed = np.packbits(padded, axis=1, bitorder="little")
    return packed.view("<u8").astype(np.uint64).view(np.int64)


def _unfused(values):
    """`values` (n, D) unchanged, computed apart from their consumers.

    XLA fuses the unpacking into whatever reads the layer's output. When
    that is a Flatten or a Concatenate of the fields (most CTR models),
    the fused loop runs over the flattened layout and took twice as long
    (`benchmarks/serving_speed.py`, 4096 x 26 ids, MLP 256-128: predict
    1.63-1.68x the float model's, 1.24-1.27x with this). A dot is never
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
        index: "segments" or "ranks" (see the module docstring).
        num_segments: Integer. Runs of consecutive ids at one bit-width
            ("segments" index).
        groups: Dict of per-group lists ("bits", "rows", "count") from the
            search, for reports; not used by the lookup, not a variable.
        **kwargs: Base layer keyword arguments.

    Attributes:
        static_shapes: Boolean, False by default. Calls traced for XLA
            (`jit_compile=True`, detected when the function is traced)
            skip the de-duplication of ids (`tf.unique`) and the split of
            ids by class (`DynamicPartition`), neither of which XLA
            compiles well. True forces that form everywhere.

    Input shape:
        Integer tensor of any shape `(...)`.

    Output shape:
        `(..., output_dim)`.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        class_rows,
        index="segments",
        num_segments=0,
        groups=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if index not in INDEXES:
            raise ValueError(
                f"`index` must be one of {INDEXES}. Received: index={index!r}"
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
        self.static_shapes = False
        self.build()

    @property
    def num_bytes(self) -> int:
        """Bytes of packed codes (the payload, rounded up per row)."""
        return sum(
            rows * packing.bytes_per_row(bits, self.output_dim)
            for bits, rows in self.class_rows
        )

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

        # A list (not a dict keyed by bits: tf_keras cannot checkpoint
        # variables under non-string keys), in class order.
        self._codes = [
            state(
                f"codes_{bits}bit",
                (rows, packing.bytes_per_row(bits, self.output_dim)),
                "uint8",
            )
            for bits, rows in self.class_rows
            if bits > 0
        ]
        if self.index == "segments":
            segments = (self.num_segments,)
            self._segment_starts = state("segment_starts", segments, "int32")
            self._segment_classes = state("segment_classes", segments, "int32")
            self._segment_slots = state("segment_slots", segments, "int32")
        else:
            classes = len(self.class_rows)
            blocks = -(-self.input_dim // ROWS_PER_BLOCK)
            planes = (_num_planes(classes), blocks * WORDS_PER_BLOCK)
            self._class_planes = state("class_planes", planes, "int64")
            self._block_counts = state(
                "block_counts", (blocks, classes), "int32"
            )
        self._step_sizes = state("step_sizes", (MAX_BITS,))
        self._offset = state("offset", (self.output_dim,))
        self.built = True

    def call(self, inputs):
        ids = tf.reshape(tf.cast(inputs, tf.int32), [-1])
        xla = _compat.in_xla_compilation()
        static = self.static_shapes or xla
        if not static:
            # Unpack each distinct id once, then spread the rows back out.
            ids, positions = tf.unique(ids)
        classes, slots = self.locate(ids)
        if static:
            values = self._rows_static(classes, slots)
            if xla:
                values = _unfused(values)
        else:
            values = self._rows_by_class(classes, slots)
            values = tf.gather(values, positions)
        shape = tf.concat([tf.shape(inputs), [self.output_dim]], 0)
        return tf.cast(tf.reshape(values, shape), self.compute_dtype)

    def _dequantized(self, bits, slots):
        """The rows at `slots` of the b-bit class, as floats."""
        stored = [b for b, _ in self.class_rows if b > 0]  # as _codes
        packed = _compat.gather_rows(self._codes[stored.index(bits)], slots)
        codes = packing.unpack_rows(packed, bits, self.output_dim)
        lo = quantizer.integer_range(bits)[0]
        step = _compat.read(self._step_sizes)[bits - 1]
        return tf.cast(codes + lo, tf.float32) * step + _compat.read(
            self._offset
        )

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
        ids = tf.cast(ids, tf.int32)
        if self.index == "segments":
            return self._locate_by_segments(ids)
        return self._locate_by_ranks(ids)

    def _locate_by_segments(self, ids):
        """Class and slot of each id."""
        starts = _compat.read(self._segment_starts)
        segment = tf.searchsorted(starts, ids, side="right") - 1
        classes = tf.gather(_compat.read(self._segment_classes), segment)
        first = tf.gather(_compat.read(self._segment_slots), segment)
        return classes, first + ids - tf.gather(starts, segment)

    def _locate_by_ranks(self, ids):
        """Class and slot of each id (rank/select)."""
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
        rank = tf.reduce_sum(tf.cast(counts, tf.int32), axis=1)
        before = tf.gather_nd(
            _compat.read(self._block_counts), tf.stack([block, code], 1)
        )
        return code, before + rank

    def rows_per_bits(self) -> dict:
        """Rows stored at each bit-width (0 = pruned)."""
        return dict(self.class_rows)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    @classmethod
    def from_searched(cls, layer, chunk_rows: int = 1 << 18, index="auto"):
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
        # Per-row arrays kept small (int8 / int32, no sorting): conversion
        # must fit next to the float table.
        row_bits = layer._chosen_bits.numpy().astype(np.int8)[
            layer._group_ids.numpy()
        ]
        seg_starts = _segment_starts(row_bits)
        per_bits = np.bincount(row_bits, minlength=MAX_BITS + 1)
        classes = np.flatnonzero(per_bits)
        class_sizes = per_bits[classes]
        class_of_bits = np.zeros(MAX_BITS + 1, np.int8)
        class_of_bits[classes] = np.arange(len(classes))
        class_of_row = class_of_bits[row_bits]
        if index == "auto":
            by_segments = SEGMENT_BYTES * len(seg_starts)
            by_ranks = _rank_index_bytes(layer.input_dim, len(classes))
            index = "segments" if by_segments <= by_ranks else "ranks"
        # A row's slot: its rank among the rows of its class, in id order.
        slot_of_row = np.empty(layer.input_dim, np.int32)
        for code, size in enumerate(class_sizes):
            members = class_of_row == code
            slot_of_row[members] = np.arange(size, dtype=np.int32)
        summary = layer.bits_per_group()
        fixed = cls(
            layer.input_dim,
            dim,
            list(zip(classes.tolist(), class_sizes.tolist(), strict=True)),
            index=index,
            num_segments=len(seg_starts) if index == "segments" else 0,
            groups={k: summary[k].tolist() for k in ("bits", "rows", "count")},
            name=layer.name,
        )
        steps, offset = layer.quantizer_parameters()
        steps = tf.abs(tf.constant(steps)) + quantizer.STEP_EPSILON
        offset = tf.constant(offset)
        step_of = dict(zip(layer.quantized_bits, steps.numpy(), strict=True))
        buffers = {
            bits: np.zeros(variable.shape, np.uint8)
            for bits, variable in zip(
                classes[classes > 0].tolist(), fixed._codes, strict=True
            )
        }
        table = layer._embeddings
        for start in range(0, layer.input_dim, chunk_rows):
            rows = slice(start, min(start + chunk_rows, layer.input_dim))
            values = tf.convert_to_tensor(table[rows])
            for bits in np.unique(row_bits[rows]).tolist():
                if bits == 0:
                    continue
                members = np.flatnonzero(row_bits[rows] == bits)
                lo, hi = quantizer.integer_range(bits)
                scaled = (tf.gather(values, members) - offset) / step_of[bits]
                codes = tf.clip_by_value(tf.round(scaled), lo, hi) - lo
                buffers[bits][slot_of_row[start + members]] = (
                    packing.pack_codes(codes.numpy().astype(np.uint8), bits)
                )
        for variable, buffer in zip(
            fixed._codes, buffers.values(), strict=True
        ):
            variable.assign(buffer)
        step_table = np.ones(MAX_BITS, np.float32)
        for bits, step in step_of.items():
            step_table[bits - 1] = step
        fixed._step_sizes.assign(step_table)
        fixed._offset.assign(offset.numpy())
        if index == "segments":
            fixed._segment_starts.assign(seg_starts.astype(np.int32))
            fixed._segment_classes.assign(
                class_of_row[seg_starts].astype(np.int32)
            )
            fixed._segment_slots.assign(
                slot_of_row[seg_starts].astype(np.int32)
            )
        else:
            fixed._assign_ranks(class_of_row)
        return fixed

    def _assign_ranks(self, class_of_row):
        blocks, classes = self._block_counts.shape
        planes = self._class_planes.shape[0]
        self._class_planes.assign(
            _class_planes(class_of_row, planes, blocks * WORDS_PER_BLOCK)
        )
        block_rows = np.full((blocks * ROWS_PER_BLOCK,), -1, np.int8)
        block_rows[: class_of_row.size] = class_of_row
        per_block = np.stack(
            [
                (block_rows.reshape(blocks, -1) == c).sum(1)
                for c in range(classes)
            ],
            axis=1,
        )
        before = np.cumsum(per_block, axis=0) - per_block
        self._block_counts.assign(before.astype(np.int32))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            class_rows=[list(pair) for pair in self.class_rows],
            index=self.index,
            num_segments=self.num_segments,
            groups=self.groups,
        )
        return config
