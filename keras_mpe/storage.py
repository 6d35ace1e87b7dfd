"""How a table with per-row bit-widths is stored: the plan and the codes.

`plan_storage` turns each row's bit-width into a storage plan, in numpy
only: rows at the same width form a class (classes in increasing bits,
0 = pruned rows, which store nothing), and each row gets a slot, its rank
among the rows of its class in id order. Per-row arrays stay small (int8
classes, int32 slots, no sorting) so that planning fits next to a large
float table.

A code layout says how a class's codes are kept in uint8 matrices and
read back in the serving graph with core TensorFlow ops:

| layout   | one row of `dim` codes at b bits            | bytes per row   |
|----------|---------------------------------------------|-----------------|
| "packed" | one little-endian bit stream (`packing.py`),| ceil(b dim / 8) |
|          | one matrix per class: the smallest          |                 |
| "bytes"  | one signed byte per code, every class in    | dim             |
|          | one matrix: the fastest to read             |                 |

A lookup of "packed" codes reads each class apart, at its constant width;
"bytes" codes are read for every id at once by one gather and one cast
(`shared_matrix`): in TensorFlow's CPU kernels each extra pass over the
looked-up rows costs about a third of a float lookup, and splitting the
ids by class costs more than it saves.

A new layout is a new class with the same attributes and methods, added
to `LAYOUTS`.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_mpe import packing

MAX_BITS = 8


@dataclasses.dataclass(frozen=True)
class StoragePlan:
    """Where each row of a table is stored.

    Attributes:
        row_bits: int8 array `(rows,)`. Each row's bit-width.
        class_bits: Tuple of the distinct bit-widths, increasing.
        class_sizes: Tuple of the rows at each of `class_bits`.
        class_of_row: int8 array `(rows,)`. Each row's position in
            `class_bits`.
        slot_of_row: int32 array `(rows,)`. Each row's rank among the rows
            of its class, in id order.
    """

    row_bits: np.ndarray
    class_bits: tuple
    class_sizes: tuple
    class_of_row: np.ndarray
    slot_of_row: np.ndarray

    @property
    def rows(self) -> int:
        return self.row_bits.size

    def in_one_matrix(self) -> "StoragePlan":
        """This plan with each row's slot its row in one matrix: row 0
        for every pruned row, then the stored rows, classes one after
        another."""
        stored = np.asarray(self.class_bits) > 0
        first = np.cumsum([1, *np.where(stored, self.class_sizes, 0)])[:-1]
        slots = first[self.class_of_row] + self.slot_of_row
        slots[~stored[self.class_of_row]] = 0
        return dataclasses.replace(self, slot_of_row=slots.astype(np.int32))

    @property
    def class_rows(self) -> list:
        """`(bits, rows)` pairs, one per class."""
        return list(zip(self.class_bits, self.class_sizes, strict=True))


def plan_storage(row_bits) -> StoragePlan:
    """The classes and slots of rows with the given bit-widths.

    Example:

    >>> plan = plan_storage([3, 0, 3, 1])
    >>> plan.class_bits, plan.slot_of_row.tolist()
    ((0, 1, 3), [0, 0, 1, 0])

    Args:
        row_bits: Integer array `(rows,)` of bit-widths from 0 to 8.

    Returns:
        A `StoragePlan`.
    """
    row_bits = np.asarray(row_bits)
    if row_bits.ndim != 1 or row_bits.size == 0:
        raise ValueError(
            "`row_bits` must be a non-empty vector. Received: shape "
            f"{row_bits.shape}"
        )
    if row_bits.min() < 0 or row_bits.max() > MAX_BITS:
        raise ValueError(
            f"`row_bits` must be from 0 to {MAX_BITS}. Received: values "
            f"from {row_bits.min()} to {row_bits.max()}"
        )
    row_bits = row_bits.astype(np.int8)
    per_bits = np.bincount(row_bits, minlength=MAX_BITS + 1)
    class_bits = np.flatnonzero(per_bits)
    class_of_bits = np.zeros(MAX_BITS + 1, np.int8)
    class_of_bits[class_bits] = np.arange(class_bits.size)
    class_of_row = class_of_bits[row_bits]
    slot_of_row = np.empty(row_bits.size, np.int32)
    for code, size in enumerate(per_bits[class_bits]):
        slot_of_row[class_of_row == code] = np.arange(size, dtype=np.int32)
    return StoragePlan(
        row_bits=row_bits,
        class_bits=tuple(class_bits.tolist()),
        class_sizes=tuple(per_bits[class_bits].tolist()),
        class_of_row=class_of_row,
        slot_of_row=slot_of_row,
    )


class PackedCodes:
    """Each row's codes as one bit stream, ceil(bits * dim / 8) bytes."""

    name = "packed"
    shared_matrix = False  # one matrix per class
    indexes = ("segments", "ranks", "direct")  # row indexes it reads
    auto_index = "auto"  # `row_index.choose_index`'s smallest

    @staticmethod
    def row_bytes(bits: int, dim: int) -> int:
        return packing.bytes_per_row(bits, dim)

    @staticmethod
    def store(codes: np.ndarray, bits: int) -> np.ndarray:
        """uint8 matrix of unsigned `codes` `(rows, dim)`."""
        return packing.pack_codes(codes, bits)

    @staticmethod
    def load(stored, bits: int, dim: int):
        """int32 codes `(n, dim)` of stored rows `(n, row_bytes)`."""
        return packing.unpack_rows(stored, bits, dim)


class ByteCodes:
    """Each code as one signed byte, code + lo (`dim` bytes per row)."""

    name = "bytes"
    # Every class's rows in one matrix after a row shared by the pruned
    # ids, read through the "direct" index holding each id's row in that
    # matrix (`StoragePlan.in_one_matrix`): one gather per id.
    shared_matrix = True
    indexes = ("direct",)
    auto_index = "direct"

    @staticmethod
    def row_bytes(bits: int, dim: int) -> int:
        return dim if bits else 0  # a byte per code up to MAX_BITS = 8

    @staticmethod
    def store(codes: np.ndarray, bits: int) -> np.ndarray:
        """uint8 matrix holding the signed codes `codes + lo` as int8."""
        signed = codes.astype(np.int16) - 2 ** (bits - 1)
        return signed.astype(np.int8).view(np.uint8)

    @staticmethod
    def load(stored):
        """float32 signed codes `(n, dim)` of stored rows `(n, dim)`."""
        return tf.cast(tf.bitcast(stored, tf.int8), tf.float32)


LAYOUTS = {layout.name: layout for layout in (PackedCodes, ByteCodes)}


def code_layout(name):
    """The layout class called `name`; a ValueError naming the valid ones."""
    if name not in LAYOUTS:
        raise ValueError(
            f"`layout` must be one of {tuple(LAYOUTS)}. Received: "
            f"layout={name!r}"
        )
    return LAYOUTS[name]
