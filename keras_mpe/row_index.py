"""Row indexes: from an id to its class and slot in a `StoragePlan`.

Three kinds, one interface (`for_plan`, `num_bytes`, `layer_config`,
`build`, `assign`, `locate`); `choose_index` keeps the smallest for a
plan, or the one a code layout reads fastest.

- "segments" (`SegmentIndex`): maximal runs of consecutive ids in one
  class, each with its class and the slot of its first id (12 bytes per
  run). When the vocabulary is frequency ordered (as an adapted
  StringLookup / IntegerLookup vocabulary is), each frequency group is one
  id range: at most one segment per group.
- "ranks" (`RankIndex`), for any other id order: each row's class as a
  k-bit code, k = ceil(log2(classes)), in k bit-planes of 64-bit words,
  plus per block of 2048 rows each class's row count before the block. A
  row's slot is that count plus a popcount over its block's words. Cost:
  k bits per row plus 32 x classes bits per 2048 rows (0.11 bits per row
  for 7 classes).
- "direct" (`DirectIndex`): each row's slot and class in one integer,
  slot x 16 + class (4 bytes per row; 8 past 2^27 rows). One gather per
  id: the fastest to read, for the speed-first "bytes" code layout.

Variables (C classes, P = max(1, k) planes, B = ceil(rows / 2048)):

| index    | variable        | shape       | dtype | role                  |
|----------|-----------------|-------------|-------|-----------------------|
| segments | segment_starts  | (segments,) | int32 | first id of each run  |
| segments | segment_classes | (segments,) | int32 | its class             |
| segments | segment_slots   | (segments,) | int32 | its first id's slot   |
| ranks    | class_planes    | (P, 32 B)   | int64 | class code bit-planes |
| ranks    | block_counts    | (B, C)      | int32 | rows per class before |
|          |                 |             |       | each block            |
| direct   | slot_and_class  | (rows,)     | int32 | slot x 16 + class     |
"""

import math

import numpy as np
import tensorflow as tf

from keras_mpe import _compat

WORDS_PER_BLOCK = 32
ROWS_PER_BLOCK = 64 * WORDS_PER_BLOCK


def _segment_starts(class_of_row) -> np.ndarray:
    """First id of each run of rows in one class."""
    change = np.flatnonzero(np.diff(class_of_row)) + 1
    return np.concatenate([[0], change]).astype(np.int64)


class SegmentIndex:
    """Runs of consecutive ids in one class (see the module docstring)."""

    kind = "segments"
    BYTES_PER_SEGMENT = 12

    def __init__(self, rows: int, num_classes: int, num_segments: int):
        del rows, num_classes  # the runs alone size this index
        self.num_segments = int(num_segments)

    @classmethod
    def for_plan(cls, plan):
        starts = _segment_starts(plan.class_of_row)
        return cls(plan.rows, len(plan.class_bits), starts.size)

    @property
    def num_bytes(self) -> int:
        return self.BYTES_PER_SEGMENT * self.num_segments

    def layer_config(self) -> dict:
        """What `FixedBitEmbedding` needs to rebuild this index."""
        return {"num_segments": self.num_segments}

    def build(self, add_state):
        shape = (self.num_segments,)
        self._starts = add_state("segment_starts", shape, "int32")
        self._classes = add_state("segment_classes", shape, "int32")
        self._slots = add_state("segment_slots", shape, "int32")

    def assign(self, plan):
        starts = _segment_starts(plan.class_of_row)
        self._starts.assign(starts.astype(np.int32))
        self._classes.assign(plan.class_of_row[starts].astype(np.int32))
        self._slots.assign(plan.slot_of_row[starts])

    def locate(self, ids):
        """Class and slot of each id (int32 vectors)."""
        starts = _compat.read(self._starts)
        segment = tf.searchsorted(starts, ids, side="right") - 1
        classes = tf.gather(_compat.read(self._classes), segment)
        first = tf.gather(_compat.read(self._slots), segment)
        return classes, first + ids - tf.gather(starts, segment)


class RankIndex:
    """Class codes in bit-planes, slots by rank (see the module docstring)."""

    kind = "ranks"

    def __init__(self, rows: int, num_classes: int, num_segments: int = 0):
        del num_segments  # not a segment index
        self.blocks = -(-rows // ROWS_PER_BLOCK)
        self.num_classes = num_classes
        self.planes = max(1, math.ceil(math.log2(max(num_classes, 1))))

    @classmethod
    def for_plan(cls, plan):
        return cls(plan.rows, len(plan.class_bits))

    @property
    def num_bytes(self) -> int:
        words = self.planes * WORDS_PER_BLOCK * self.blocks
        return 8 * words + 4 * self.blocks * self.num_classes

    def layer_config(self) -> dict:
        """What `FixedBitEmbedding` needs to rebuild this index (sizes
        follow from the rows and classes)."""
        return {}

    def build(self, add_state):
        words = self.blocks * WORDS_PER_BLOCK
        self._planes = add_state("class_planes", (self.planes, words), "int64")
        self._block_counts = add_state(
            "block_counts", (self.blocks, self.num_classes), "int32"
        )

    def assign(self, plan):
        codes = plan.class_of_row
        padded_rows = self.blocks * ROWS_PER_BLOCK
        # Bit j of each row's class code, 64 rows per little-endian word.
        shifts = np.arange(self.planes, dtype=np.uint8)[:, None]
        bits = np.zeros((self.planes, padded_rows), np.uint8)
        bits[:, : codes.size] = (codes.astype(np.uint8)[None, :] >> shifts) & 1
        packed = np.packbits(bits, axis=1, bitorder="little")
        self._planes.assign(packed.view("<u8").astype(np.uint64).view(np.int64))
        block_rows = np.full(padded_rows, -1, np.int8)
        block_rows[: codes.size] = codes
        per_block = np.stack(
            [
                (block_rows.reshape(self.blocks, -1) == c).sum(1)
                for c in range(self.num_classes)
            ],
            axis=1,
        )
        before = np.cumsum(per_block, axis=0) - per_block
        self._block_counts.assign(before.astype(np.int32))

    def locate(self, ids):
        """Class and slot of each id (rank/select)."""
        planes = _compat.read(self._planes)
        word = ids // 64
        bit = tf.cast(ids % 64, tf.uint64)
        block = ids // ROWS_PER_BLOCK
        # Each id's class code, bit j from plane j.
        own = tf.bitcast(tf.gather(planes, word, axis=1), tf.uint64)
        one = tf.constant(1, tf.uint64)
        code = tf.zeros_like(ids)
        for j in range(self.planes):
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
        for j in range(self.planes):
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


class DirectIndex:
    """Each row's slot and class in one integer (see the module docstring)."""

    kind = "direct"
    CLASS_BITS = 4  # classes are bit-widths 0..8: 9 < 16

    def __init__(self, rows: int, num_classes: int, num_segments: int = 0):
        del num_classes, num_segments  # one entry per row, whatever they are
        self.rows = rows
        # Slots are below `rows`: int32 holds slot x 16 + 15 up to 2^27
        # rows.
        wide = rows << self.CLASS_BITS > 2**31
        self.dtype = "int64" if wide else "int32"

    @classmethod
    def for_plan(cls, plan):
        return cls(plan.rows, len(plan.class_bits))

    @property
    def num_bytes(self) -> int:
        return self.rows * np.dtype(self.dtype).itemsize

    def layer_config(self) -> dict:
        """What `FixedBitEmbedding` needs to rebuild this index (the rows
        alone size it)."""
        return {}

    def build(self, add_state):
        self._entries = add_state("slot_and_class", (self.rows,), self.dtype)

    def assign(self, plan):
        entries = plan.slot_of_row.astype(self.dtype) << self.CLASS_BITS
        self._entries.assign(entries | plan.class_of_row.astype(self.dtype))

    def locate(self, ids):
        """Class and slot of each id: one gather, a mask and a shift."""
        entries = _compat.gather_rows(self._entries, ids)
        classes = tf.bitwise.bitwise_and(entries, (1 << self.CLASS_BITS) - 1)
        slots = tf.bitwise.right_shift(entries, self.CLASS_BITS)
        return tf.cast(classes, tf.int32), tf.cast(slots, tf.int32)


INDEXES = {
    index.kind: index for index in (SegmentIndex, RankIndex, DirectIndex)
}
SMALLEST = ("segments", "ranks")  # what "auto" chooses from by bytes


def choose_index(plan, kind: str = "auto"):
    """The index of `kind` for `plan`; "auto": the one with fewer bytes
    among `SMALLEST`."""
    if kind not in ("auto", *INDEXES):
        raise ValueError(
            f"`index` must be 'auto' or one of {tuple(INDEXES)}. "
            f"Received: index={kind!r}"
        )
    if kind != "auto":
        return INDEXES[kind].for_plan(plan)
    candidates = [INDEXES[name].for_plan(plan) for name in SMALLEST]
    return min(candidates, key=lambda index: index.num_bytes)
