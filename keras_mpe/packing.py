"""Bit packing of integer codes into bytes, and unpacking with core TF ops.

A row of `dim` codes of `bits` bits each is one little-endian bit stream:
code j occupies bits [j * bits, (j + 1) * bits) of the row, and the row
takes ceil(dim * bits / 8) bytes. Packing runs once, in numpy, at
conversion time. Unpacking runs in the serving graph on the gathered bytes
of the requested rows only, with Gather, Cast, shifts and masks: every op
is in TensorFlow's core registry, so TF Serving runs it.
"""

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
    planes = (codes[:, :, None].astype(np.uint8) >> np.arange(bits)) & 1
    stream = planes.reshape(rows, dim * bits)
    padded = np.zeros((rows, 8 * bytes_per_row(bits, dim)), np.uint8)
    padded[:, : dim * bits] = stream
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_codes(packed, bits, dim: int):
    """Unpacks rows packed by `pack_codes`, each at its own bit-width.

    Args:
        packed: uint8 tensor `(n, width)`: each row's bytes, zero padded on
            the right to a common width of at least
            `bytes_per_row(max bits, dim) + 1`.
        bits: int32 tensor `(n,)` (or a scalar): each row's bit-width,
            from 1 to 8.
        dim: Integer. Codes per row.

    Returns:
        int32 tensor `(n, dim)` of unsigned codes.
    """
    packed = tf.cast(packed, tf.int32)
    bits = tf.reshape(tf.cast(bits, tf.int32), [-1, 1])
    first_bit = tf.broadcast_to(
        tf.range(dim, dtype=tf.int32)[None, :] * bits,
        [tf.shape(packed)[0], dim],
    )
    byte = tf.bitwise.right_shift(first_bit, 3)
    shift = tf.bitwise.bitwise_and(first_bit, 7)
    # A code of <= 8 bits spans at most two consecutive bytes.
    low = tf.gather(packed, byte, batch_dims=1)
    high = tf.gather(packed, byte + 1, batch_dims=1)
    word = tf.bitwise.bitwise_or(low, tf.bitwise.left_shift(high, 8))
    mask = tf.bitwise.left_shift(tf.ones_like(bits), bits) - 1
    return tf.bitwise.bitwise_and(tf.bitwise.right_shift(word, shift), mask)
