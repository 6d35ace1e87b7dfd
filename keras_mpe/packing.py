"""Bit packing of integer codes into bytes, and unpacking with core TF ops.

A row of `dim` codes of `bits` bits each is one little-endian bit stream:
code j occupies bits [j * bits, (j + 1) * bits) of the row, and the row
takes ceil(dim * bits / 8) bytes. Packing runs once, in numpy, at
conversion time. Unpacking runs in the serving graph on the gathered rows
only, with Reshape, Cast, Sum, shifts and masks: every op is in
TensorFlow's core registry, so TF Serving runs it.
"""

import math

import numpy as np
import tensorflow as tf


def bytes_per_row(bits: int, dim: int) -> int:
    """Bytes that one packed row of `dim` codes of `bits` bits takes."""
    return -(-bits * dim // 8)


def pack_codes(codes, bits: int) -> np.ndarray:
    """Packs unsigned integer codes row by row.

    Example:

    >>> pack_codes([[1, 2, 3]], bits=2)  # 01 | 10 << 2 | 11 << 4
    array([[57]], dtype=uint8)

    Args:
        codes: Integer array `(rows, dim)`, values in [0, 2^bits).
        bits: Integer from 1 to 8.

    Returns:
        uint8 array `(rows, bytes_per_row(bits, dim))`.
    """
    codes = np.asarray(codes)
    if not 1 <= bits <= 8:
        raise ValueError(f"`bits` must be from 1 to 8. Received: bits={bits}")
    if codes.ndim != 2:
        raise ValueError(
            f"`codes` must be a matrix. Received: shape {codes.shape}"
        )
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(
            f"`codes` must be in [0, {2**bits}) for bits={bits}. Received: "
            f"values from {codes.min()} to {codes.max()}"
        )
    rows, dim = codes.shape
    # Bit k of code j lands at bit j * bits + k of the row.
    shifts = np.arange(bits, dtype=np.uint8)
    planes = (codes[:, :, None].astype(np.uint8) >> shifts) & 1
    stream = planes.reshape(rows, dim * bits)
    padded = np.zeros((rows, 8 * bytes_per_row(bits, dim)), np.uint8)
    padded[:, : dim * bits] = stream
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_rows(packed, bits: int, dim: int):
    """Unpacks rows packed by `pack_codes`, all at one bit-width.

    Only whole-row reshapes and elementwise shifts, no per-code gathers:
    8 / gcd(bits, 8) codes fill bits / gcd(bits, 8) bytes exactly (a
    "chunk", at most 7 bytes), so each chunk is read as one integer and
    its codes are shifted out of it at constant offsets.

    Example:

    >>> unpack_rows(pack_codes([[1, 2, 3]], bits=2), bits=2, dim=3)
    <tf.Tensor: ... numpy=array([[1, 2, 3]], dtype=int32)>

    Args:
        packed: uint8 tensor `(n, bytes_per_row(bits, dim))`.
        bits: Integer from 1 to 8.
        dim: Integer. Codes per row.

    Returns:
        int32 tensor `(n, dim)` of unsigned codes.
    """
    common = math.gcd(bits, 8)
    chunk_bytes, chunk_codes = bits // common, 8 // common
    chunks = -(-dim // chunk_codes)
    missing = chunks * chunk_bytes - bytes_per_row(bits, dim)
    if missing:  # the row's last chunk is partly padding
        packed = tf.pad(packed, [[0, 0], [0, missing]])
    word = tf.int32 if chunk_bytes <= 3 else tf.int64
    chunk = tf.reshape(packed, [-1, chunks, chunk_bytes])
    place = tf.constant([1 << (8 * k) for k in range(chunk_bytes)], word)
    values = tf.reduce_sum(tf.cast(chunk, word) * place, axis=-1)
    shifts = tf.constant([bits * j for j in range(chunk_codes)], word)
    codes = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(values[:, :, None], shifts),
        tf.constant((1 << bits) - 1, word),
    )
    codes = tf.reshape(codes, [-1, chunks * chunk_codes])[:, :dim]
    return tf.cast(codes, tf.int32)
