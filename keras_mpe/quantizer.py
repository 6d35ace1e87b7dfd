"""Uniform fake quantization with a learned step size and offset (LSQ+).

For a bit-width b >= 1 the signed integer range is lo = -2^(b-1) and
hi = 2^(b-1) - 1, and a value e is quantized as

    u = (e - beta) / alpha
    Q(e) = clip(round(u), lo, hi) * alpha + beta

with `alpha` the step size (used as |alpha| + 1e-10) and `beta` the offset.
The gradients are written out rather than derived by autodiff, following
LSQ (arXiv 1902.08153) and LSQ+ (arXiv 2004.09576):

    inside = lo <= u <= hi
    dQ/de     = inside                          (straight-through, clipped)
    dQ/dalpha = s * (lo [u < lo] + hi [u > hi] + inside * (round(u) - u))
    dQ/dbeta  = s * ([u < lo] + [u > hi])

where s is the LSQ gradient scale 1 / sqrt(2^(b-1) * rows * dim).

Stored codes are unsigned: `encode` gives clip(round(u), lo, hi) - lo in
[0, 2^b) and `decode` maps them back. Training (`fake_quantize`),
conversion and serving all go through the same three steps below
(`effective_step`, rounding and clipping, dequantization), which is what
makes a converted table equal to the bit to the trained one.
"""

import math

import tensorflow as tf

STEP_EPSILON = 1e-10


def integer_range(bits: int) -> tuple:
    """The signed integer range `(lo, hi)` of a `bits`-bit code."""
    if bits < 1:
        raise ValueError(
            f"`bits` must be a positive integer. Received: bits={bits}"
        )
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def gradient_scale(bits: int, rows: int, dim: int) -> float:
    """The LSQ gradient scale 1 / sqrt(2^(b-1) * rows * dim)."""
    return 1.0 / math.sqrt(2 ** (bits - 1) * rows * dim)


def initial_step_size(mean_abs: float, bits: int) -> float:
    """The LSQ initial step size 2 * mean(|W|) / sqrt(2^(b-1))."""
    return 2.0 * mean_abs / math.sqrt(2 ** (bits - 1))


def effective_step(step_size):
    """The step the quantizer uses: |alpha| + 1e-10 (never zero)."""
    return tf.abs(step_size) + STEP_EPSILON


def _signed_codes(scaled, lo, hi):
    """clip(round(u), lo, hi): the signed integer codes, as floats."""
    return tf.clip_by_value(tf.round(scaled), lo, hi)


def dequantize(signed_codes, step, offset):
    """code * step + offset, the one dequantization formula.

    Args:
        signed_codes: Float tensor of signed codes clip(round(u), lo, hi).
        step: Float tensor broadcasting to `signed_codes`: the effective
            step (`effective_step`), or 0 for rows that store nothing.
        offset: Float tensor broadcasting to `signed_codes`: beta.
    """
    return signed_codes * step + offset


def encode(values, step_size, offset, bits: int):
    """The stored codes of `values` at `bits` bits: clip(round(u)) - lo.

    Example:

    >>> encode([[0.3, -1.0]], 0.5, 0.0, bits=2)  # u = 0.6, -2
    <tf.Tensor: ... numpy=array([[3, 0]], dtype=int32)>

    Args:
        values: Float tensor `(..., dim)`. Latent values e.
        step_size: Float scalar. alpha (the quantizer uses |alpha| + 1e-10).
        offset: Float tensor broadcasting to `values`. beta.
        bits: Integer from 1 to 8.

    Returns:
        int32 tensor shaped like `values`, unsigned codes in [0, 2^bits).
    """
    lo, hi = integer_range(bits)
    values = tf.convert_to_tensor(values, tf.float32)
    scaled = (values - offset) / effective_step(step_size)
    return tf.cast(_signed_codes(scaled, lo, hi) - lo, tf.int32)


def decode(codes, step_size, offset, bits: int):
    """The values that `encode` codes stand for: (code + lo) * step + beta.

    Equal to the bit to `fake_quantize`'s forward pass at the same
    `bits`, `step_size` and `offset`.

    Args:
        codes: Integer tensor of unsigned codes.
        step_size: Float scalar. alpha.
        offset: Float tensor broadcasting to `codes`. beta.
        bits: Integer from 1 to 8.

    Returns:
        float32 tensor shaped like `codes`.
    """
    lo = integer_range(bits)[0]
    signed = tf.cast(codes + lo, tf.float32)
    return dequantize(signed, effective_step(step_size), offset)


def _sum_to_shape(grad, target):
    """Sums a broadcast gradient back down to the shape of `target`."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(
        s0=tf.shape(grad), s1=tf.shape(target)
    )
    return tf.reshape(tf.reduce_sum(grad, axes), tf.shape(target))


def fake_quantize(values, step_size, offset, lo, hi, grad_scale):
    """Quantizes `values` and dequantizes them again, with LSQ+ gradients.

    All arguments broadcast against `values`, so one call can quantize a
    batch of rows at several bit-widths at once (for example `values` of
    shape `(n, 1, dim)` with `step_size`, `lo`, `hi` and `grad_scale` of
    shape `(k, 1)` gives `(n, k, dim)`).

    Args:
        values: Float tensor. The latent values e.
        step_size: Float tensor. The step sizes alpha.
        offset: Float tensor. The offset beta.
        lo: Float tensor. The lowest integer code.
        hi: Float tensor. The highest integer code.
        grad_scale: Float tensor. The LSQ gradient scale s; it must
            broadcast to the shape of `step_size`.

    Returns:
        The fake-quantized values, broadcast to the common shape.
    """
    lo = tf.convert_to_tensor(lo, values.dtype)
    hi = tf.convert_to_tensor(hi, values.dtype)
    grad_scale = tf.convert_to_tensor(grad_scale, values.dtype)

    @tf.custom_gradient
    def _quantize(values, step_size, offset):
        step = effective_step(step_size)
        scaled = (values - offset) / step
        codes = _signed_codes(scaled, lo, hi)
        output = dequantize(codes, step, offset)

        def grad(upstream):
            # Few full-size ops: this runs for every looked-up row.
            inside = tf.cast(
                tf.logical_and(scaled >= lo, scaled <= hi), values.dtype
            )
            d_values = upstream * inside
            # lo below the range, hi above it, round(u) - u inside: all
            # three are codes - inside * u.
            d_step = _sum_to_shape(upstream * (codes - inside * scaled), step)
            d_offset = _sum_to_shape((upstream - d_values) * grad_scale, offset)
            return (
                _sum_to_shape(d_values, values),
                d_step * grad_scale * tf.sign(step_size),
                d_offset,
            )

        return output, grad

    return _quantize(values, step_size, offset)
