"""Integer fixed-point primitives of the accelerator's vector unit.

Everything here is integer-only (numpy ``int64``), deterministic and element-wise over arrays of
any shape, so that :mod:`models.intref` can run a whole batch at once. Each function is the
bit-exact definition of a hardware block; ``docs/arithmetic.md`` gives the widths, the table
contents and the measured errors.

One rounding rule everywhere: round half away from zero. For integers that is
:func:`round_shift` (an arithmetic right shift that rounds ties away from zero), for floats on
the host :func:`round_half_away` (the numpy twin of :func:`models.quant.round_half_away`).

Blocks
------
- :func:`round_shift`, :func:`saturate`, :func:`bit_length`, :func:`normalize_mant17`:
  shifter, saturator, leading-zero counter, pseudo-float normaliser.
- :func:`recip_norm`: reciprocal of a normalised 16-bit mantissa, 256-entry table + one Newton
  step (:data:`RECIP_TABLE`).
- :func:`rsqrt_norm`: reciprocal square root of a 16-bit mantissa over two octaves, 384-entry
  table + one Newton step (:data:`RSQRT_TABLE`).
- :func:`sigmoid_q16`: sigmoid by a 1025-entry table over [0, 16] with linear interpolation,
  odd symmetry for negative inputs (:data:`SIGMOID_TABLE`).
- :func:`silu_fx`: SiLU as ``y * sigmoid(y)`` (one multiply after the sigmoid table).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "round_half_away",
    "quantize",
    "to_float",
    "round_shift",
    "saturate",
    "bit_length",
    "normalize_mant17",
    "MANT_BITS",
    "RECIP_IN_BITS",
    "RECIP_OUT_FRAC",
    "RECIP_INDEX_BITS",
    "RECIP_TABLE",
    "recip_table",
    "recip_norm",
    "RSQRT_OUT_FRAC",
    "RSQRT_INDEX_SHIFT",
    "RSQRT_TABLE",
    "rsqrt_table",
    "rsqrt_norm",
    "SIGMOID_FRAC",
    "SIGMOID_ONE",
    "SIGMOID_TABLE_FRAC",
    "SIGMOID_STEP_BITS",
    "SIGMOID_RANGE",
    "SIGMOID_MAX_IN_FRAC",
    "SIGMOID_TABLE",
    "sigmoid_table",
    "sigmoid_q16",
    "silu_fx",
]

_I64 = np.int64


# --------------------------------------------------------------------------- float <-> fixed
def round_half_away(x) -> np.ndarray:
    """Round floats to the nearest integer, ties away from zero (numpy, float64).

    Same rule and same exactness argument as :func:`models.quant.round_half_away`:
    ``x - trunc(x)`` is exact, so a value just below a tie is never pushed over it.

    Parameters
    ----------
    x : array_like
        Floats.

    Returns
    -------
    numpy.ndarray
        float64 array of integer values.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0.0)


def quantize(x, frac_bits: int, bits: int | None = None) -> np.ndarray:
    """Float to signed fixed point: ``round_half_away(x * 2**frac_bits)``, saturated to ``bits``.

    Parameters
    ----------
    x : array_like
        Real values.
    frac_bits : int
        Fractional bits of the result.
    bits : int, optional
        Total width of a signed result (two's complement); ``None``: no saturation.

    Returns
    -------
    numpy.ndarray
        int64 array.
    """
    q = round_half_away(np.asarray(x, dtype=np.float64) * 2.0 ** frac_bits)
    if bits is not None:
        lim = 2.0 ** (bits - 1)
        q = np.clip(q, -lim, lim - 1)
    return q.astype(_I64)


def to_float(x, frac_bits) -> np.ndarray:
    """Fixed point back to float64: ``x * 2**-frac_bits`` (``frac_bits`` may be an array)."""
    return np.asarray(x, dtype=np.float64) * np.exp2(-np.asarray(frac_bits, dtype=np.float64))


# --------------------------------------------------------------------------- shifter / saturator
def round_shift(x, s) -> np.ndarray:
    """Arithmetic shift with rounding half away from zero: ``round(x / 2**s)`` exactly.

    ``s > 0``: ``sign(x) * ((|x| + 2**(s-1)) >> s)`` (ties such as ``x = +-2**(s-1)`` go away
    from zero); ``s <= 0``: exact left shift ``x << -s``. In hardware: take ``|x|``, add the
    half-LSB constant, shift, restore the sign (or equivalently add ``2**(s-1) - (x < 0)`` before
    an arithmetic shift).

    Parameters
    ----------
    x : array_like of int
        Signed integers (int64; the caller guarantees no int64 overflow).
    s : int or array_like of int
        Shift amount(s), broadcast against ``x``.

    Returns
    -------
    numpy.ndarray
        int64 array.
    """
    x = np.asarray(x, dtype=_I64)
    s = np.asarray(s, dtype=_I64)
    if s.ndim == 0:
        s0 = int(s)
        if s0 <= 0:
            return x << _I64(-s0)
        a = (np.abs(x) + (_I64(1) << _I64(s0 - 1))) >> _I64(s0)
        return np.where(x < 0, -a, a)
    sr = np.maximum(s, 1)
    a = (np.abs(x) + (_I64(1) << (sr - 1))) >> sr
    right = np.where(x < 0, -a, a)
    if s.size and s.min() > 0:
        return right
    left = x << np.maximum(-s, 0)
    return np.where(s > 0, right, left)


def saturate(x, bits: int) -> np.ndarray:
    """Clamp to the range of a ``bits``-wide two's complement integer, ``[-2**(bits-1), 2**(bits-1)-1]``."""
    lim = 1 << (bits - 1)
    return np.clip(np.asarray(x, dtype=_I64), -lim, lim - 1)


def bit_length(x) -> np.ndarray:
    """Bit length of non-negative integers (``0 -> 0``, ``1 -> 1``, ``2**k -> k + 1``).

    The hardware equivalent is a leading-zero counter: ``bit_length = width - lzc``. Exact for
    ``0 <= x < 2**53`` (checked).
    """
    x = np.asarray(x, dtype=_I64)
    if x.size and (x.min() < 0 or x.max() >= (1 << 53)):
        raise ValueError("bit_length needs 0 <= x < 2**53")
    _, e = np.frexp(x.astype(np.float64))
    return e.astype(_I64)


MANT_BITS = 17
"""Mantissa width of the vector unit's pseudo-float scalars: ``2**16 <= mant < 2**17``."""


def normalize_mant17(x) -> tuple[np.ndarray, np.ndarray]:
    """Normalise positive integers to ``mant * 2**exp`` with a 17-bit mantissa.

    ``exp = bit_length(x) - 17``, ``mant = round_shift(x, exp)``; a rounding carry to ``2**17``
    is renormalised to ``2**16`` with ``exp + 1`` (exact). For ``x = 0`` returns ``(0, 0)``.

    Returns
    -------
    mant, exp : numpy.ndarray
        int64 arrays, ``2**16 <= mant < 2**17`` wherever ``x > 0``.
    """
    x = np.asarray(x, dtype=_I64)
    if np.any(x < 0):
        raise ValueError("normalize_mant17 needs x >= 0")
    e = bit_length(x) - MANT_BITS
    m = round_shift(x, e)
    carry = m >= (1 << MANT_BITS)
    m = np.where(carry, m >> 1, m)
    e = e + carry
    zero = x == 0
    return np.where(zero, 0, m), np.where(zero, 0, e)


# --------------------------------------------------------------------------- reciprocal
RECIP_IN_BITS = 16
"""Reciprocal input: ``2**15 <= mn < 2**16`` (a mantissa 1.15, i.e. ``mn / 2**15`` in [1, 2))."""
RECIP_OUT_FRAC = 32
"""Reciprocal output ``r ~= 2**32 / mn`` (``2**16 < r <= 2**17``)."""
RECIP_INDEX_BITS = 8
"""Table index: the 8 bits of ``mn`` after its leading one (``(mn >> 7) - 256``)."""


def recip_table() -> np.ndarray:
    """The 256-entry seed table of :func:`recip_norm`.

    Entry ``j = 0..255`` is ``round_half_away(2**32 / ((256 + j + 0.5) * 2**7))``: the reciprocal
    at the middle of the bucket of ``mn`` values sharing index ``j``. 17-bit unsigned
    (65600 .. 130816).
    """
    j = np.arange(256, dtype=np.float64)
    return round_half_away(2.0 ** 32 / ((256.0 + j + 0.5) * 2.0 ** 7)).astype(_I64)


RECIP_TABLE = recip_table()


def recip_norm(mn) -> np.ndarray:
    """Reciprocal ``r ~= 2**32 / mn`` of a normalised mantissa, table seed + one Newton step.

    ::

        r0 = RECIP_TABLE[(mn >> 7) - 256]             17 bits
        e  = mn * r0 - 2**32                          |e| < 2**24   (16 x 17-bit multiply)
        r  = r0 - round_shift(r0 * round_shift(e, 8), 24)           (17 x 17-bit multiply)

    Parameters
    ----------
    mn : array_like of int
        ``2**15 <= mn < 2**16``.

    Returns
    -------
    numpy.ndarray
        int64, ``|r - 2**32/mn| < 1`` (exhaustively checked, see tests and docs).
    """
    mn = np.asarray(mn, dtype=_I64)
    if np.any(mn < (1 << 15)) or np.any(mn >= (1 << 16)):
        raise ValueError("recip_norm needs 2**15 <= mn < 2**16")
    r0 = RECIP_TABLE[(mn >> 7) - 256]
    e = mn * r0 - (_I64(1) << _I64(32))
    return r0 - round_shift(r0 * round_shift(e, 8), 24)


# --------------------------------------------------------------------------- rsqrt
RSQRT_OUT_FRAC = 23
"""Reciprocal square root output ``q ~= 2**23 / sqrt(ms)`` (``2**15 <= q <= 2**16``)."""
RSQRT_INDEX_SHIFT = 7
"""Table index ``(ms >> 7) - 128``: 384 entries covering ``ms`` in [2**14, 2**16)."""


def rsqrt_table() -> np.ndarray:
    """The 384-entry seed table of :func:`rsqrt_norm`.

    Entry ``j = 0..383`` is ``round_half_away(2**23 / sqrt((128 + j + 0.5) * 2**7))``, the value
    at the middle of its bucket. 17-bit unsigned (32784 .. 65408).
    """
    j = np.arange(384, dtype=np.float64)
    return round_half_away(2.0 ** 23 / np.sqrt((128.0 + j + 0.5) * 2.0 ** 7)).astype(_I64)


RSQRT_TABLE = rsqrt_table()


def rsqrt_norm(ms) -> np.ndarray:
    """Reciprocal square root ``q ~= 2**23 / sqrt(ms)`` for ``2**14 <= ms < 2**16``.

    The caller normalises a sum of squares to ``ms * 2**k`` with ``k`` even (two octaves of
    mantissa) so that ``1/sqrt(ss) = q * 2**-(23 + k/2)``. Table seed and one Newton step::

        q0 = RSQRT_TABLE[(ms >> 7) - 128]             17 bits
        t  = round_shift(q0 * q0, 16)                 ~ 2**30 / ms, 17 bits (17 x 17)
        e  = ms * t - 2**30                           |e| < 2**23   (16 x 17)
        q  = q0 - round_shift(q0 * round_shift(e, 8), 23)           (17 x 16)

    Returns
    -------
    numpy.ndarray
        int64, ``|q - 2**23/sqrt(ms)| < 1`` (exhaustively checked).
    """
    ms = np.asarray(ms, dtype=_I64)
    if np.any(ms < (1 << 14)) or np.any(ms >= (1 << 16)):
        raise ValueError("rsqrt_norm needs 2**14 <= ms < 2**16")
    q0 = RSQRT_TABLE[(ms >> RSQRT_INDEX_SHIFT) - 128]
    t = round_shift(q0 * q0, 16)
    e = ms * t - (_I64(1) << _I64(30))
    return q0 - round_shift(q0 * round_shift(e, 8), 23)


# --------------------------------------------------------------------------- sigmoid / SiLU
SIGMOID_FRAC = 16
"""Sigmoid output format: unsigned Q0.16, values 0 .. 65536 (17 bits; 65536 means 1.0)."""
SIGMOID_ONE = 1 << SIGMOID_FRAC
SIGMOID_TABLE_FRAC = 18
"""Table entries hold ``sigmoid(x) - 1/2`` in Q0.18 (0 .. 131072, 18 bits unsigned)."""
SIGMOID_STEP_BITS = 6
"""Table step ``2**-6``: entries at ``x = k/64``, ``k = 0..1024``."""
SIGMOID_RANGE = 16
SIGMOID_MAX_IN_FRAC = 16
"""Inputs with more fractional bits are first rounded to 16 (interpolation fraction <= 10 bits)."""
"""Table covers ``|x|`` in [0, 16]; larger inputs are clamped (sigmoid(16) = 1 - 1.1e-7)."""


def sigmoid_table() -> np.ndarray:
    """The 1025-entry sigmoid table: ``round_half_away((sigmoid(k/64) - 1/2) * 2**18)``, k = 0..1024."""
    x = np.arange(SIGMOID_RANGE * (1 << SIGMOID_STEP_BITS) + 1, dtype=np.float64) / (1 << SIGMOID_STEP_BITS)
    return round_half_away((1.0 / (1.0 + np.exp(-x)) - 0.5) * 2.0 ** SIGMOID_TABLE_FRAC).astype(_I64)


SIGMOID_TABLE = sigmoid_table()


def sigmoid_q16(y, frac_bits: int) -> np.ndarray:
    """Sigmoid of a signed fixed-point input, as unsigned Q0.16 (0 .. 65536).

    ::

        if F > 16: y = round_shift(y, F - 16); F = 16   at most 16 fractional bits enter
        a   = min(|y|, 16 * 2**F - 1)                  clamp to the table range
        k   = a >> (F - 6);  fr = a & (2**(F-6) - 1)    index and interpolation fraction
        d   = T[k] + round_shift((T[k+1] - T[k]) * fr, F - 6)    Q0.18, linear interpolation
        p   = round_shift(2**17 + d, 2)                 sigmoid(|y|) in Q0.16
        out = p if y >= 0 else 65536 - p                odd symmetry, 1 - sigmoid(y) = sigmoid(-y)

    Parameters
    ----------
    y : array_like of int
        Input with ``frac_bits`` fractional bits (any width).
    frac_bits : int
        ``F >= 6``.

    Returns
    -------
    numpy.ndarray
        int64 in [0, 65536]; ``|out / 2**16 - sigmoid(y / 2**F)| <= 1.2e-5`` (see docs).
    """
    if frac_bits < SIGMOID_STEP_BITS:
        raise ValueError(f"sigmoid_q16 needs at least {SIGMOID_STEP_BITS} fractional input bits")
    y = np.asarray(y, dtype=_I64)
    if frac_bits > SIGMOID_MAX_IN_FRAC:
        y = round_shift(y, frac_bits - SIGMOID_MAX_IN_FRAC)
        frac_bits = SIGMOID_MAX_IN_FRAC
    fb = frac_bits - SIGMOID_STEP_BITS
    a = np.minimum(np.abs(y), (SIGMOID_RANGE << frac_bits) - 1)
    k = a >> fb
    fr = a & ((1 << fb) - 1)
    t0 = SIGMOID_TABLE[k]
    d = t0 + round_shift((SIGMOID_TABLE[k + 1] - t0) * fr, fb)
    p = round_shift((1 << (SIGMOID_TABLE_FRAC - 1)) + d, SIGMOID_TABLE_FRAC - SIGMOID_FRAC)
    return np.where(y < 0, SIGMOID_ONE - p, p)


def silu_fx(y, frac_bits: int, out_frac_bits: int) -> np.ndarray:
    """SiLU ``y * sigmoid(y)``: one multiply of the input by :func:`sigmoid_q16`.

    ``out = round_shift(y * sigmoid_q16(y), frac_bits + 16 - out_frac_bits)``. For an 18-bit
    ``y`` the product is 18 x 17 bits (one MULT18X18D).

    Parameters
    ----------
    y : array_like of int
        Input with ``frac_bits`` fractional bits.
    frac_bits, out_frac_bits : int
        Input and output fractional bits (``out_frac_bits <= frac_bits + 16``).
    """
    y = np.asarray(y, dtype=_I64)
    return round_shift(y * sigmoid_q16(y, frac_bits), frac_bits + SIGMOID_FRAC - out_frac_bits)
