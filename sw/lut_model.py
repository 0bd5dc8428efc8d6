"""Golden model of the table arithmetic of the LUT-based mpGEMM unit (:class:`hw.pe.lut_gemm.LutGemv`).

The model computes a dot product ``sum(w * x)`` of int8 activations and low-bit weights the way
the gateware does: by table lookup, with the same table contents, the same symmetric half
tables, the same sign handling and the same integer correction. It is written for clarity, bit
for bit like the hardware, and checked against the plain integer dot product in
``tests/test_lut_model.py``.

Weight formats
--------------
``"tl2"``
    Ternary weights, three per 5-bit TL2 code (:func:`sw.packing.tl2_encode`): sign in bit 4,
    index ``|9 w0 + 3 w1 + w2|`` in bits 3:0. One 14-entry table per group of three activations,
    entry ``e`` holding ``sum_j d_j(e) x_j`` where ``d(e)`` are the balanced-ternary digits of
    ``e``; the same values as :func:`sw.packing.tl2_table`.
``"int2"``, ``"int3"``, ``"int4"``
    k-bit signed weights ``w`` in ``[-2**(k-1), 2**(k-1) - 1]`` through bit planes (T-MAC): the
    unit receives ``q = w + 2**(k-1)`` (k bits) and reads bit ``i`` of ``q`` as
    ``b' = 2 b - 1`` in {-1, +1}, so that ``2 w = sum_i 2**i b'_i - 1``. For a group of ``g``
    activations the full table is ``T[p] = sum_j (bit_j(p) ? +x_j : -x_j)`` (``2**g`` entries);
    since ``T[p] = -T[~p]`` only the half with bit ``g-1`` clear is stored,
    ``H[h] = T[h]`` for ``h < 2**(g-1)``. The hardware computes ``2 * dot`` exactly::

        2 dot = sum_i 2**i sum_groups T[p_i] - sum(x)

    and ``sum(x) = -sum_groups H[0]`` (entry 0 has every sign negative), so no separate adder of
    the activations is needed.

Lookup with a sign
------------------
A lookup returns ``(e XOR s) + s`` for the stored entry ``e`` and sign bit ``s``: two's
complement negation when ``s`` is 1. TL2 takes ``s`` from the code; a bit-plane index ``p``
takes ``s = bit_{g-1}(p)`` and reads ``H[(p XOR s...s) mod 2**(g-1)]``.

Activations are int8 values in ``[-127, 127]``: the BitLinear quantiser never produces -128
(SPEC section 1), and the table entries are sized for 127 (10 bits for g = 3 or 4).
"""

from __future__ import annotations

import numpy as np

from sw.packing import tl2_encode

__all__ = [
    "WEIGHT_FORMATS", "X_MAX", "weight_bits", "weight_range", "check_format",
    "table_digits", "table_entries", "entry_bound", "entry_width", "signed_width",
    "build_tables", "negate_if", "lookup", "encode_weights",
    "lut_dot", "lut_gemv", "acc_bound", "result_bound",
]

#: Weight formats the LUT unit takes, with their bits per weight on the unit's input.
WEIGHT_FORMATS = {"tl2": None, "int2": 2, "int3": 3, "int4": 4}

#: Largest activation magnitude (int8 without -128).
X_MAX = 127


def check_format(fmt: str, group: int, symmetric: bool = True) -> None:
    """Raise ``ValueError`` unless ``fmt`` is a weight format and ``group`` fits it."""
    if fmt == "tl2" and not symmetric:
        raise ValueError("TL2 tables are always symmetric (sign + 4-bit index)")
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {sorted(WEIGHT_FORMATS)}, not {fmt!r}")
    if fmt == "tl2" and group != 3:
        raise ValueError(f"TL2 groups hold 3 activations, not {group!r}")
    if fmt != "tl2" and group not in (2, 3, 4):
        raise ValueError(f"bit-plane groups must hold 2, 3 or 4 activations, not {group!r}")


def weight_bits(fmt: str) -> int | None:
    """Bits per weight of a bit-plane format (``None`` for TL2)."""
    check_format(fmt, 3)
    return WEIGHT_FORMATS[fmt]


def weight_range(fmt: str) -> tuple[int, int]:
    """Smallest and largest weight of ``fmt``."""
    k = weight_bits(fmt)
    return (-1, 1) if k is None else (-(1 << (k - 1)), (1 << (k - 1)) - 1)


def table_digits(fmt: str, group: int, symmetric: bool = True) -> np.ndarray:
    """Coefficients ``d[e, j]`` in {-1, 0, +1} such that table entry ``e`` is ``sum_j d[e, j] x_j``.

    TL2: ``e = 9 d0 + 3 d1 + d2`` (balanced ternary), 14 entries. Bit planes: entry ``h`` of the
    half table, ``d_j = 2 bit_j(h) - 1`` for ``j < g - 1`` and ``d_{g-1} = -1``; with
    ``symmetric=False`` the full table, ``d_j = 2 bit_j(p) - 1`` for all ``j`` (``2**g`` entries).
    """
    check_format(fmt, group, symmetric)
    if not symmetric:
        p = np.arange(1 << group)
        return np.stack([2 * ((p >> j) & 1) - 1 for j in range(group)], axis=1).astype(np.int64)
    if fmt == "tl2":
        d = np.zeros((14, 3), np.int64)
        for e in range(14):
            r = e
            for j in (2, 1, 0):
                digit = ((r + 1) % 3) - 1
                d[e, j] = digit
                r = (r - digit) // 3
        return d
    h = np.arange(1 << (group - 1))
    d = np.full((len(h), group), -1, np.int64)
    for j in range(group - 1):
        d[:, j] = 2 * ((h >> j) & 1) - 1
    return d


def table_entries(fmt: str, group: int, symmetric: bool = True) -> int:
    """Stored entries per table: 14 for TL2, ``2**(g-1)`` for a bit-plane half table, ``2**g``
    for a full one."""
    return len(table_digits(fmt, group, symmetric))


def signed_width(bound: int) -> int:
    """Bits of a two's complement signal that holds every integer in ``[-bound, bound]``."""
    return max(int(bound).bit_length() + 1, 2)


def entry_bound(fmt: str, group: int) -> int:
    """Largest ``|entry|``: ``g * 127`` (TL2 entries reach ``x0 + x1 + x2``)."""
    return int(np.abs(table_digits(fmt, group)).sum(axis=1).max()) * X_MAX


def entry_width(fmt: str, group: int) -> int:
    """Width of a full-precision table entry (9 bits for g = 2, 10 for g = 3 or 4)."""
    return signed_width(entry_bound(fmt, group))


def build_tables(x, fmt: str, group: int, symmetric: bool = True) -> np.ndarray:
    """Tables for the activation vector ``x`` (length a multiple of ``group``), one row per group.

    Returns
    -------
    numpy.ndarray
        ``int64`` array ``(len(x) // group, table_entries)``.
    """
    x = np.asarray(x, np.int64)
    if x.ndim != 1 or len(x) % group:
        raise ValueError(f"activations must be 1-D with a length that is a multiple of {group}")
    if np.abs(x).max(initial=0) > X_MAX:
        raise ValueError(f"activations must lie in [-{X_MAX}, {X_MAX}]")
    return x.reshape(-1, group) @ table_digits(fmt, group, symmetric).T


def negate_if(e, s):
    """``(e XOR s...s) + s``: ``e`` when ``s`` is 0, ``-e`` when ``s`` is 1 (two's complement)."""
    e = np.asarray(e, np.int64)
    s = np.asarray(s, np.int64)
    return (e ^ -s) + s


def lookup(tables: np.ndarray, index, fmt: str, group: int, symmetric: bool = True) -> np.ndarray:
    """Signed table lookups, as the lanes do them (a full table is read directly, no sign).

    Parameters
    ----------
    tables : numpy.ndarray
        ``(groups, entries)`` from :func:`build_tables`.
    index : array_like
        ``(..., groups)``: a TL2 code (5 bits) or a ``g``-bit bit-plane index per group.
    """
    index = np.asarray(index, np.int64)
    cols = np.arange(tables.shape[0])
    if fmt == "tl2":
        s, e = index >> 4, index & 15
        if (e > 13).any():
            raise ValueError("TL2 index above 13")
    elif not symmetric:
        return tables[cols, index]
    else:
        s = (index >> (group - 1)) & 1
        half = (1 << (group - 1)) - 1
        e = (index ^ -s) & half
    return negate_if(tables[cols, e], s)


def encode_weights(w, fmt: str) -> np.ndarray:
    """The weight codes the unit receives for weights ``w`` (last axis = K).

    TL2: one 5-bit code per three weights (:func:`sw.packing.tl2_encode`, K padded with zeros to
    a multiple of 3). Bit planes: ``q = w + 2**(k-1)``, one k-bit value per weight.
    """
    w = np.asarray(w, np.int64)
    lo, hi = weight_range(fmt)
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"{fmt} weights must lie in [{lo}, {hi}]")
    if fmt == "tl2":
        rows = w.reshape(-1, w.shape[-1])
        codes = np.stack([tl2_encode(r) for r in rows]) if len(rows) else np.zeros((0, 0))
        return codes.astype(np.int64).reshape(*w.shape[:-1], -1)
    return w + (1 << (weight_bits(fmt) - 1))


def _padded(a: np.ndarray, group: int) -> np.ndarray:
    pad = -a.shape[-1] % group
    return np.concatenate([a, np.zeros(a.shape[:-1] + (pad,), np.int64)], axis=-1)


def lut_gemv(w, x, fmt: str, group: int = 3, symmetric: bool = True) -> np.ndarray:
    """``w @ x`` computed by table lookup (rows of ``w`` are output rows, the last axis is K).

    K is padded with zero weights and zero activations to a multiple of ``group``.
    """
    check_format(fmt, group, symmetric)
    w = np.atleast_2d(np.asarray(w, np.int64))
    x = _padded(np.asarray(x, np.int64), group)
    w = _padded(w, group)
    if w.shape[-1] != x.shape[-1]:
        raise ValueError(f"w has {w.shape[-1]} columns, x has {len(x)} values")
    tables = build_tables(x, fmt, group, symmetric)
    codes = encode_weights(w, fmt)
    if fmt == "tl2":
        return lookup(tables, codes, fmt, group).sum(axis=-1)
    k = weight_bits(fmt)
    q = codes.reshape(len(w), -1, group)
    twice = np.zeros(len(w), np.int64)
    for i in range(k):
        p = (((q >> i) & 1) << np.arange(group)).sum(axis=-1)   # (rows, groups) plane-i indices
        twice += lookup(tables, p, fmt, group, symmetric).sum(axis=-1) << i
    twice += tables[:, 0].sum()            # - sum(x): entry 0 has every sign negative
    assert not (twice & 1).any(), "2 * dot must be even"
    return twice >> 1


def lut_dot(w, x, fmt: str, group: int = 3, symmetric: bool = True) -> int:
    """One dot product ``sum(w * x)`` by table lookup (see :func:`lut_gemv`)."""
    return int(lut_gemv(np.asarray(w)[None, :], x, fmt, group, symmetric)[0])


def acc_bound(fmt: str, k_max: int) -> int:
    """Largest ``|accumulator|`` over ``k_max`` weights.

    TL2 accumulates ``dot`` itself (``127 * K``); bit planes accumulate
    ``2 dot + sum(x) = sum (2 w + 1) x``, at most ``(2**k - 1) * 127 * K``.
    """
    k = weight_bits(fmt)
    return X_MAX * k_max * (1 if k is None else (1 << k) - 1)


def result_bound(fmt: str, k_max: int) -> int:
    """Largest ``|dot|`` over ``k_max`` weights: ``max|w| * 127 * K``."""
    lo, hi = weight_range(fmt)
    return X_MAX * k_max * max(-lo, hi)
