"""BitMoD per-group mixed-datatype weight quantiser and the fixed-point dot product of its PE.

Quantiser (SPEC section 4)
--------------------------
Weights are cut into groups of ``group_size`` (128) consecutive values along the last axis (K).
For every group and every candidate datatype of the requested bit width:

- ``scale = absmax(group) / max|grid|`` with the candidate's own integer grid;
- every weight goes to the nearest grid value of ``w / scale``; an **exact midpoint between two
  grid values goes to the numerically lower one** (towards minus infinity: ``0.5 -> 0``,
  ``-0.5 -> -1``, ``2.5 -> 2``, ``-2.5 -> -3``). This is the rule of SPEC section 4; it is the
  one place in the project that does not round half away from zero (the project-wide rule of
  :func:`models.quant.round_half_away`), because it selects grid values, not integers;
- the squared error ``sum((w - scale * q)**2)`` is computed in float64 and the candidate with
  the lowest error wins; on an exact tie the earlier candidate of :data:`BITMOD_CANDIDATES` wins.

Candidates, in this fixed order (the order decides ties):

=====  ===========================================================================
bits   order
=====  ===========================================================================
3      INT3, FP3_ER_POS, FP3_ER_NEG, FP3_EA_POS, FP3_EA_NEG
4      INT4, FP4_ER_POS, FP4_ER_NEG, FP4_EA_POS, FP4_EA_NEG
=====  ===========================================================================

Plain FP3/FP4 are not candidates: an ER variant has the same ``max|grid|`` (hence the same scale)
and a superset of the grid, so it is never worse.

An all-zero group gets scale 0, every code 0 (value 0) and the first candidate (INT).

Integer grids (units of the group scale)
----------------------------------------
INT3 ``{0, +-1, +-2, +-3}``; INT4 ``{-7..7}``; FP3 ``{0, +-1, +-2, +-4}``;
FP4 (E2M1 x 2) ``{0, +-1, +-2, +-3, +-4, +-6, +-8, +-12}``; each FP variant adds one value in
the redundant "-0" code: FP3 ER +-3, EA +-6; FP4 ER +-10, EA +-16.

Code formats (what the PE reads, :func:`encode` / :func:`decode`)
-----------------------------------------------------------------
=============  ======  ===================================================================
datatype       bits    code
=============  ======  ===================================================================
TERNARY        2       ``w + 1``: 0 -> -1, 1 -> 0, 2 -> +1 (3 is not a valid code, reads 0)
INT3, INT4     3, 4    sign-magnitude: ``sign << (bits-1) | |w|``; "-0" reads 0, never made
INT8           8       two's complement, -128..127
FP3_*          3       sign-magnitude over the magnitude table ``0, 1, 2, 4``;
                       "-0" (``0b100``) is the extra value (+-3 ER, +-6 EA)
FP4_*          4       sign-magnitude over ``0, 1, 2, 3, 4, 6, 8, 12``;
                       "-0" (``0b1000``) is the extra value (+-10 ER, +-16 EA)
=============  ======  ===================================================================

Fixed-point dot product (what the PE computes, bit for bit)
-----------------------------------------------------------
With int8 activations ``x`` and, per group ``g``, integer weights ``v`` and a fixed-point scale
``(m_g, e_g)`` (``m_g`` unsigned 16 bit, ``e_g`` in 0..31, value ``m_g * 2**-e_g``)::

    P_g   = sum(v[i] * x[i] for i in group g)                 exact integer
    R_g   = P_g                                                if dtype_g is TERNARY
          = round_half_away(P_g * m_g / 2**e_g)                otherwise
    dot   = sum(R_g)

Ternary groups are not rescaled: a ternary matrix has one scale for the whole tensor (SPEC
section 1), applied outside the PE. :func:`scale_to_fixed` turns a float scale into ``(m, e)``
with ``frac_bits`` fraction bits in the result, so that ``dot / 2**frac_bits`` approximates the
float dot product of the dequantised weights with ``x``. :func:`bitmod_dot_fixed` is the golden
model of :class:`hw.pe.bitserial.BitSerialPE`.

Signed power-of-two terms (the PE's serial decomposition)
---------------------------------------------------------
:func:`weight_terms` gives, for each datatype, the terms ``(negate, shift)`` (or ``None`` for a
zero term) that the PE adds one per cycle: ternary 1 term, 3- and 4-bit types 2 terms, INT8 4
radix-4 Booth digits. Their sum ``sum(+-(1 << shift))`` equals the weight value.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DType",
    "GROUP_SIZE",
    "SCALE_MANT_BITS",
    "SCALE_EXP_BITS",
    "BITMOD_CANDIDATES",
    "CODE_BITS",
    "TERMS_PER_WEIGHT",
    "MAG_TABLE",
    "EXTRA_VALUE",
    "TERM_TABLE",
    "grid",
    "decode",
    "encode",
    "round_to_grid",
    "BitModGroups",
    "bitmod_quantize",
    "bitmod_dequantize",
    "rshift_round_half_away",
    "scale_to_fixed",
    "fixed_to_scale",
    "weight_terms",
    "group_partial_sums",
    "bitmod_dot_fixed",
]

#: Weights per group along K.
GROUP_SIZE = 128
#: Bits of the unsigned scale mantissa ``m``.
SCALE_MANT_BITS = 16
#: Bits of the scale shift ``e`` (0..31).
SCALE_EXP_BITS = 5


class DType(enum.IntEnum):
    """Weight datatype of one group, as the PE's 4-bit ``dtype`` field carries it."""

    TERNARY = 0
    INT3 = 1
    INT4 = 2
    INT8 = 3
    FP3_ER_POS = 4
    FP3_ER_NEG = 5
    FP3_EA_POS = 6
    FP3_EA_NEG = 7
    FP4_ER_POS = 8
    FP4_ER_NEG = 9
    FP4_EA_POS = 10
    FP4_EA_NEG = 11


_FP3 = (DType.FP3_ER_POS, DType.FP3_ER_NEG, DType.FP3_EA_POS, DType.FP3_EA_NEG)
_FP4 = (DType.FP4_ER_POS, DType.FP4_ER_NEG, DType.FP4_EA_POS, DType.FP4_EA_NEG)

#: Candidate datatypes per bit width, in the order that decides ties.
BITMOD_CANDIDATES = {3: (DType.INT3, *_FP3), 4: (DType.INT4, *_FP4)}

#: Code width of each datatype.
CODE_BITS = {DType.TERNARY: 2, DType.INT3: 3, DType.INT4: 4, DType.INT8: 8,
             **{d: 3 for d in _FP3}, **{d: 4 for d in _FP4}}

#: PE cycles (signed power-of-two terms) per weight.
TERMS_PER_WEIGHT = {DType.TERNARY: 1, DType.INT8: 4,
                    **{d: 2 for d in (DType.INT3, DType.INT4, *_FP3, *_FP4)}}

#: Magnitude table of the sign-magnitude datatypes, indexed by the magnitude bits of the code.
MAG_TABLE = {DType.INT3: (0, 1, 2, 3), DType.INT4: tuple(range(8)),
             **{d: (0, 1, 2, 4) for d in _FP3}, **{d: (0, 1, 2, 3, 4, 6, 8, 12) for d in _FP4}}

#: Value of the "-0" code of each sign-magnitude datatype (0 for INT: unused).
EXTRA_VALUE = {DType.INT3: 0, DType.INT4: 0,
               DType.FP3_ER_POS: 3, DType.FP3_ER_NEG: -3, DType.FP3_EA_POS: 6,
               DType.FP3_EA_NEG: -6,
               DType.FP4_ER_POS: 10, DType.FP4_ER_NEG: -10, DType.FP4_EA_POS: 16,
               DType.FP4_EA_NEG: -16}

#: Magnitude -> at most two signed power-of-two terms ``(negate, shift)`` whose sum is it.
#: Every magnitude of every 3- and 4-bit grid is here.
TERM_TABLE = {0: (), 1: ((0, 0),), 2: ((0, 1),), 3: ((0, 1), (0, 0)), 4: ((0, 2),),
              5: ((0, 2), (0, 0)), 6: ((0, 2), (0, 1)), 7: ((0, 3), (1, 0)), 8: ((0, 3),),
              10: ((0, 3), (0, 1)), 12: ((0, 3), (0, 2)), 16: ((0, 4),)}


def _check_dtype(dtype) -> DType:
    try:
        return DType(int(dtype))
    except ValueError:
        raise ValueError(f"unknown datatype {dtype!r}; known: {[d.name for d in DType]}") from None


def grid(dtype) -> np.ndarray:
    """Sorted integer grid values of ``dtype`` (int64)."""
    dtype = _check_dtype(dtype)
    if dtype == DType.TERNARY:
        return np.array([-1, 0, 1], dtype=np.int64)
    if dtype == DType.INT8:
        return np.arange(-128, 128, dtype=np.int64)
    mags = MAG_TABLE[dtype]
    values = set(mags) | {-v for v in mags}
    values.add(EXTRA_VALUE[dtype])
    return np.array(sorted(values), dtype=np.int64)


def _decode_table(dtype: DType) -> np.ndarray:
    n = 1 << CODE_BITS[dtype]
    if dtype == DType.TERNARY:
        return np.array([-1, 0, 1, 0], dtype=np.int64)
    if dtype == DType.INT8:
        return np.array([c - 256 if c >= 128 else c for c in range(n)], dtype=np.int64)
    half = n // 2
    mags = MAG_TABLE[dtype]
    table = [mags[c] for c in range(half)] + [-mags[c] for c in range(half)]
    table[half] = EXTRA_VALUE[dtype]
    return np.array(table, dtype=np.int64)


def decode(codes, dtype) -> np.ndarray:
    """Integer weight values of ``codes`` (array of unsigned codes) of datatype ``dtype``."""
    dtype = _check_dtype(dtype)
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << CODE_BITS[dtype]):
        raise ValueError(f"{dtype.name} codes must be in 0..{(1 << CODE_BITS[dtype]) - 1}")
    return _decode_table(dtype)[codes]


def encode(values, dtype) -> np.ndarray:
    """Codes (uint8) of integer ``values`` that lie on the grid of ``dtype``."""
    dtype = _check_dtype(dtype)
    values = np.asarray(values, dtype=np.int64)
    table = _decode_table(dtype)
    inverse = {}
    for code in range(len(table) - 1, -1, -1):  # the lowest code of each value wins ("+0")
        inverse[int(table[code])] = code
    if dtype == DType.TERNARY:
        inverse = {-1: 0, 0: 1, 1: 2}
    out = np.empty(values.shape, dtype=np.uint8)
    for idx, v in np.ndenumerate(values):
        if int(v) not in inverse:
            raise ValueError(f"{int(v)} is not on the {dtype.name} grid {grid(dtype).tolist()}")
        out[idx] = inverse[int(v)]
    return out


def round_to_grid(y, values) -> np.ndarray:
    """Nearest value of the sorted grid ``values`` to each ``y``; exact midpoints go lower.

    Parameters
    ----------
    y : array_like of float
        Values in grid units.
    values : array_like of int
        Sorted grid.

    Returns
    -------
    numpy.ndarray of int64
        Grid values, shape of ``y``.
    """
    values = np.asarray(values, dtype=np.int64)
    mid = (values[:-1] + values[1:]) / 2.0  # exact in float64 (halves of small integers)
    # side="left": the index counts midpoints strictly below y, so y == midpoint stays low.
    return values[np.searchsorted(mid, np.asarray(y, dtype=np.float64), side="left")]


@dataclass(frozen=True)
class BitModGroups:
    """Result of :func:`bitmod_quantize`.

    Members
    -------
    codes : numpy.ndarray of uint8, shape (..., K)
        Weight codes, each in the format of its group's datatype.
    values : numpy.ndarray of int64, shape (..., K)
        Integer grid values of the codes (``decode(codes, dtype)``).
    dtypes : numpy.ndarray of uint8, shape (..., K // group_size)
        Chosen :class:`DType` per group.
    scales : numpy.ndarray of float64, shape (..., K // group_size)
        Group scale: ``w ~= scale * value``.
    bits : int
    group_size : int
    """

    codes: np.ndarray
    values: np.ndarray
    dtypes: np.ndarray
    scales: np.ndarray
    bits: int
    group_size: int


def bitmod_quantize(w, bits: int = 4, group_size: int = GROUP_SIZE) -> BitModGroups:
    """Quantise ``w`` per group of ``group_size`` along the last axis with BitMoD datatypes.

    Parameters
    ----------
    w : array_like of float, shape (..., K)
        Weights; ``K`` must be a multiple of ``group_size``. Torch tensors are accepted.
    bits : {3, 4}
        Bit width; selects the candidates of :data:`BITMOD_CANDIDATES`.
    group_size : int
        Weights per group.

    Returns
    -------
    BitModGroups
    """
    if bits not in BITMOD_CANDIDATES:
        raise ValueError(f"BitMoD bit width must be 3 or 4, not {bits!r}")
    if not (isinstance(group_size, int) and group_size > 0):
        raise ValueError(f"group_size must be a positive int, not {group_size!r}")
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 0 or w.shape[-1] % group_size:
        raise ValueError(f"last axis ({w.shape[-1] if w.ndim else 'scalar'}) must be a multiple "
                         f"of group_size {group_size}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite")
    lead, k = w.shape[:-1], w.shape[-1]
    groups = w.reshape(-1, k // group_size, group_size)
    absmax = np.abs(groups).max(axis=-1)                       # (N, G)
    cands = BITMOD_CANDIDATES[bits]

    best_err = np.full(absmax.shape, np.inf)
    best_idx = np.zeros(absmax.shape, dtype=np.int64)
    best_vals = np.zeros(groups.shape, dtype=np.int64)
    best_scale = np.zeros(absmax.shape)
    zero = absmax == 0
    for idx, dt in enumerate(cands):
        g = grid(dt)
        scale = absmax / np.abs(g).max()
        safe = np.where(zero, 1.0, scale)
        vals = round_to_grid(groups / safe[..., None], g)
        vals[zero] = 0
        err = ((groups - scale[..., None] * vals) ** 2).sum(axis=-1)
        better = err < best_err                                # strict: ties keep the earlier
        best_err = np.where(better, err, best_err)
        best_idx = np.where(better, idx, best_idx)
        best_scale = np.where(better, scale, best_scale)
        best_vals = np.where(better[..., None], vals, best_vals)

    dtypes = np.array(cands, dtype=np.uint8)[best_idx]
    codes = np.empty(groups.shape, dtype=np.uint8)
    for dt in cands:
        sel = dtypes == dt
        if sel.any():
            codes[sel] = encode(best_vals[sel], dt)
    shape_g = (*lead, k // group_size)
    return BitModGroups(codes=codes.reshape(w.shape), values=best_vals.reshape(w.shape),
                        dtypes=dtypes.reshape(shape_g), scales=best_scale.reshape(shape_g),
                        bits=bits, group_size=group_size)


def bitmod_dequantize(q: BitModGroups) -> np.ndarray:
    """Float64 weights ``scale * decode(code)`` of a :class:`BitModGroups`."""
    k = q.codes.shape[-1]
    codes = q.codes.reshape(-1, k // q.group_size, q.group_size)
    dtypes = q.dtypes.reshape(-1, k // q.group_size)
    vals = np.zeros(codes.shape, dtype=np.int64)
    for dt in np.unique(dtypes):
        sel = dtypes == dt
        vals[sel] = decode(codes[sel], int(dt))
    out = vals * q.scales.reshape(dtypes.shape)[..., None]
    return out.reshape(q.codes.shape)


def rshift_round_half_away(value: int, shift: int) -> int:
    """``round_half_away(value / 2**shift)`` on Python integers, exactly."""
    value, shift = int(value), int(shift)
    if shift < 0:
        raise ValueError("shift must be >= 0")
    if shift == 0:
        return value
    half = 1 << (shift - 1)
    mag = (abs(value) + half) >> shift
    return -mag if value < 0 else mag


def scale_to_fixed(scale: float, frac_bits: int = 0) -> tuple[int, int]:
    """Fixed-point scale ``(m, e)`` with ``m * 2**-e ~= scale * 2**frac_bits``.

    ``m`` is normalised into ``[2**15, 2**16)`` (rounded half away from zero) while ``e`` fits
    0..31; smaller values lose mantissa bits (``e = 31``), zero gives ``(0, 0)``.

    Raises
    ------
    ValueError
        If the scaled value is negative, not finite, or needs ``e < 0`` (larger than
        ``2**16 - 1``).
    """
    s = float(scale) * 2.0 ** frac_bits
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"scale must be finite and >= 0, not {scale!r}")
    if s == 0:
        return 0, 0
    emax = (1 << SCALE_EXP_BITS) - 1
    e = SCALE_MANT_BITS - 1 - math.floor(math.log2(s))
    e = min(e, emax)
    m = math.floor(s * 2.0 ** e + 0.5)                  # s > 0: half away from zero
    if m >= 1 << SCALE_MANT_BITS:                       # rounding carried out of 16 bits
        m, e = (m + 1) >> 1, e - 1
    if e < 0 or m >= 1 << SCALE_MANT_BITS:
        raise ValueError(f"scale {scale!r} * 2**{frac_bits} does not fit a 16-bit mantissa")
    return int(m), int(e)


def fixed_to_scale(m: int, e: int, frac_bits: int = 0) -> float:
    """The real scale ``m * 2**-(e + frac_bits)`` of a fixed-point scale."""
    return m * 2.0 ** -(e + frac_bits)


def weight_terms(value: int, dtype) -> list:
    """The PE's per-cycle terms of one weight: a list of ``(negate, shift)`` or ``None``.

    Its length is ``TERMS_PER_WEIGHT[dtype]``; ``sum(-(1 << s) if n else (1 << s))`` over the
    non-``None`` terms equals ``value``. INT8 uses radix-4 Booth digits: term ``j`` is digit
    ``d_j = -2*b[2j+1] + b[2j] + b[2j-1]`` (``b[-1] = 0``) times ``4**j``.
    """
    dtype = _check_dtype(dtype)
    value = int(value)
    n = TERMS_PER_WEIGHT[dtype]
    if dtype == DType.INT8:
        if not -128 <= value <= 127:
            raise ValueError(f"INT8 value out of range: {value}")
        b = value & 0xFF
        bit = lambda i: (b >> i) & 1 if i >= 0 else 0  # noqa: E731
        out = []
        for j in range(4):
            d = -2 * bit(2 * j + 1) + bit(2 * j) + bit(2 * j - 1)
            out.append(None if d == 0 else (int(d < 0), 2 * j + (abs(d) == 2)))
        return out
    if value not in set(grid(dtype).tolist()):
        raise ValueError(f"{value} is not on the {dtype.name} grid")
    terms = [(neg ^ (value < 0), s) for neg, s in TERM_TABLE[abs(value)]]
    return terms + [None] * (n - len(terms))


def _flat_values(codes, dtypes, group_size):
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    dtypes = np.asarray(dtypes, dtype=np.int64).reshape(-1)
    if codes.size != dtypes.size * group_size:
        raise ValueError(f"{codes.size} codes do not make {dtypes.size} groups of {group_size}")
    vals = np.empty(codes.size, dtype=np.int64)
    for g, dt in enumerate(dtypes):
        sl = slice(g * group_size, (g + 1) * group_size)
        vals[sl] = decode(codes[sl], int(dt))
    return vals


def group_partial_sums(codes, dtypes, x_q, group_size: int = GROUP_SIZE) -> list[int]:
    """Exact integer partial sums ``P_g = sum(value * x)`` of one dot product, per group."""
    vals = _flat_values(codes, dtypes, group_size)
    x = np.asarray(x_q, dtype=np.int64).reshape(-1)
    if x.size != vals.size:
        raise ValueError(f"{x.size} activations for {vals.size} weights")
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError("activations must be int8")
    prod = (vals * x).reshape(-1, group_size)
    return [int(p) for p in prod.sum(axis=1)]


def bitmod_dot_fixed(codes, dtypes, scales_fixed, x_q, group_size: int = GROUP_SIZE) -> int:
    """Golden model of :class:`hw.pe.bitserial.BitSerialPE`: one fixed-point dot product.

    Parameters
    ----------
    codes : array_like of int, shape (G * group_size,)
        Weight codes of one row.
    dtypes : array_like of int, shape (G,)
        :class:`DType` of each group.
    scales_fixed : sequence of (m, e), length G
        Fixed-point group scales (see :func:`scale_to_fixed`); ignored for TERNARY groups.
    x_q : array_like of int, shape (G * group_size,)
        int8 activations.

    Returns
    -------
    int
        ``sum_g R_g`` with ``R_g = P_g`` for ternary groups and
        ``round_half_away(P_g * m_g / 2**e_g)`` otherwise.
    """
    dtypes = [int(d) for d in np.asarray(dtypes).reshape(-1)]
    scales_fixed = [tuple(int(v) for v in s) for s in scales_fixed]
    if len(scales_fixed) != len(dtypes):
        raise ValueError(f"{len(scales_fixed)} scales for {len(dtypes)} groups")
    total = 0
    for p, dt, (m, e) in zip(group_partial_sums(codes, dtypes, x_q, group_size), dtypes,
                             scales_fixed):
        if dt == DType.TERNARY:
            total += p
            continue
        if not (0 <= m < 1 << SCALE_MANT_BITS and 0 <= e < 1 << SCALE_EXP_BITS):
            raise ValueError(f"fixed-point scale out of range: m={m}, e={e}")
        total += rshift_round_half_away(p * m, e)
    return total
