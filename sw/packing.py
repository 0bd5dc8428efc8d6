"""Ternary weight packing formats shared by the host packer and the gateware testbenches.

Every format is defined here once. The host compiler packs checkpoints with these functions and
the cocotb testbenches pack the weights they feed the gateware with the same functions, so the
decoder in hardware and the encoder on the host cannot drift apart.

Formats
-------
``2bit``
    2 bits per weight, ``code = w + 1`` in {0, 1, 2} (code 3 is invalid), four codes per byte,
    the first weight in the least significant bits.
``trits5``
    1.6 bits per weight, five weights per byte. With ``t_n = w_n + 1`` the group value is
    ``q = sum t_n * 3**(4 - n)`` (0..242); the byte stored is ``ceil(q * 256 / 243)`` so that a
    decoder needs no table: ``t_n = (((byte * 3**n) % 256) * 3) >> 8``.
``tl2``
    1.67 bits per weight (bitnet.cpp TL2), three weights per 5-bit code:
    ``v = 9 w0 + 3 w1 + w2`` in [-13, 13], code = ``sign(v) << 4 | |v|`` (sign bit set for
    negative ``v``; "negative zero" 0b10000 is invalid). :func:`pack_tl2` stores the codes as a
    little-endian bit stream, 5 bits each.

Padding
-------
A weight vector whose length is not a multiple of the group size (4, 5 or 3 weights) is padded
with zero weights at the end. Unpacking takes the true ``count`` and drops the padding; it
checks that the padding decodes to zeros.

Every format reproduces the plain integer dot product ``sum(w * x)`` exactly.
"""

import numpy as np

__all__ = [
    "FORMATS", "bits_per_weight", "check_ternary",
    "pack_2bit", "unpack_2bit",
    "trits5_encode_group", "trits5_decode_byte", "TRITS5_VALID_BYTES", "pack_trits5", "unpack_trits5",
    "tl2_encode", "tl2_decode", "pack_tl2", "unpack_tl2", "tl2_table",
    "pack", "unpack", "packed_len", "to_int",
]

#: Weights per group and bits per group of each format.
FORMATS = {"2bit": (4, 8), "trits5": (5, 8), "tl2": (3, 5)}


def bits_per_weight(fmt: str) -> float:
    """Storage cost of ``fmt`` in bits per weight (padding not counted)."""
    group, bits = FORMATS[fmt]
    return bits / group


def check_ternary(w) -> np.ndarray:
    """Return ``w`` as a 1-D ``int8`` array, or raise if any value is not in {-1, 0, +1}.

    Raises
    ------
    TypeError
        If ``w`` is not an integer (or boolean) array, e.g. float weights that were never
        ternarised.
    ValueError
        If ``w`` is not one-dimensional or holds a value outside {-1, 0, +1}.
    """
    a = np.asarray(w)
    if a.dtype.kind not in "iub":
        raise TypeError(f"ternary weights must be an integer array, not dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"ternary weights must be one-dimensional, not shape {a.shape}")
    bad = (a < -1) | (a > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"weight {i} is {int(a[i])}; ternary weights must be -1, 0 or +1")
    return a.astype(np.int8)


def _padded(w, group: int) -> np.ndarray:
    w = check_ternary(w)
    pad = -len(w) % group
    return np.concatenate([w, np.zeros(pad, np.int8)])


def _check_count(data: np.ndarray, count: int, fmt: str):
    if count < 0:
        raise ValueError(f"count must be non-negative, not {count}")
    need = packed_len(count, fmt)
    if len(data) < need:
        raise ValueError(f"{count} weights in format {fmt!r} need {need} bytes, got {len(data)}")


def _as_bytes(data) -> np.ndarray:
    a = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)
    if a.dtype.kind not in "iu" or a.ndim != 1 or (a.size and (a.min() < 0 or a.max() > 255)):
        raise ValueError("packed data must be a 1-D array of byte values")
    return a.astype(np.uint8)


def _check_padding(w: np.ndarray, count: int, fmt: str) -> np.ndarray:
    if w[count:].any():
        raise ValueError(f"format {fmt!r}: padding after weight {count} is not zero")
    return w[:count]


# --- 2 bits per weight ---------------------------------------------------------------------------

def pack_2bit(w) -> np.ndarray:
    """Pack ternary ``w`` as 2-bit codes ``w + 1``, four per byte, first weight in bits 1:0."""
    codes = (_padded(w, 4) + 1).astype(np.uint8).reshape(-1, 4)
    return (codes[:, 0] | codes[:, 1] << 2 | codes[:, 2] << 4 | codes[:, 3] << 6).astype(np.uint8)


def unpack_2bit(data, count: int) -> np.ndarray:
    """Inverse of :func:`pack_2bit`: the first ``count`` weights as ``int8``.

    Raises
    ------
    ValueError
        On a too-short buffer, an invalid code 3, or non-zero padding.
    """
    data = _as_bytes(data)
    _check_count(data, count, "2bit")
    data = data[:packed_len(count, "2bit")]
    codes = np.stack([(data >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)
    if (codes == 3).any():
        i = int(np.flatnonzero(codes == 3)[0])
        raise ValueError(f"2-bit code 3 at weight {i} is not a ternary code")
    return _check_padding(codes.astype(np.int8) - 1, count, "2bit")


# --- 5 trits per byte ----------------------------------------------------------------------------

_POW3 = np.array([81, 27, 9, 3, 1], np.int64)  # 3**(4 - n)


def trits5_encode_group(w5) -> int:
    """The byte that stores five ternary weights: ``ceil(q * 256 / 243)``."""
    t = check_ternary(w5).astype(np.int64) + 1
    if len(t) != 5:
        raise ValueError(f"a trits5 group holds 5 weights, not {len(t)}")
    q = int((t * _POW3).sum())
    return -(-q * 256 // 243)


def trits5_decode_byte(byte: int) -> list[int]:
    """The five trits ``t_n`` (0..2, i.e. ``w + 1``) a decoder reads from ``byte``.

    This is the multiply-shift rule the gateware decoder implements,
    ``t_n = (((byte * 3**n) % 256) * 3) >> 8``; no table.
    """
    if not 0 <= byte <= 255:
        raise ValueError(f"byte must be 0..255, not {byte}")
    return [(((byte * 3 ** n) % 256) * 3) >> 8 for n in range(5)]


#: The 243 byte values that :func:`trits5_encode_group` can produce.
TRITS5_VALID_BYTES = frozenset(-(-q * 256 // 243) for q in range(243))

# Decode table for the host (the gateware computes the same thing arithmetically); invalid bytes
# map to -2 so that unpacking can reject them.
_TRITS5_TABLE = np.full((256, 5), -2, np.int8)
for _b in TRITS5_VALID_BYTES:
    _TRITS5_TABLE[_b] = np.array(trits5_decode_byte(_b), np.int8) - 1


def pack_trits5(w) -> np.ndarray:
    """Pack ternary ``w`` five weights per byte (see the module docstring)."""
    t = (_padded(w, 5).astype(np.int64) + 1).reshape(-1, 5)
    q = t @ _POW3
    return ((q * 256 + 242) // 243).astype(np.uint8)


def unpack_trits5(data, count: int) -> np.ndarray:
    """Inverse of :func:`pack_trits5`: the first ``count`` weights as ``int8``.

    Raises
    ------
    ValueError
        On a too-short buffer, a byte that no group of five trits encodes to (13 of the 256
        values), or non-zero padding.
    """
    data = _as_bytes(data)
    _check_count(data, count, "trits5")
    data = data[:packed_len(count, "trits5")]
    w = _TRITS5_TABLE[data]
    if (w == -2).any():
        i = int(np.flatnonzero((w == -2).any(axis=1))[0])
        raise ValueError(f"byte {i} ({int(data[i])}) is not a valid trits5 code")
    return _check_padding(w.reshape(-1), count, "trits5")


# --- TL2: 3 weights in 5 bits --------------------------------------------------------------------

def tl2_encode(w) -> np.ndarray:
    """TL2 codes (``uint8``, 0..31) for ternary ``w``, one per group of three weights."""
    g = _padded(w, 3).astype(np.int64).reshape(-1, 3)
    v = 9 * g[:, 0] + 3 * g[:, 1] + g[:, 2]
    return (((v < 0).astype(np.int64) << 4) | np.abs(v)).astype(np.uint8)


def tl2_decode(codes) -> np.ndarray:
    """Inverse of :func:`tl2_encode`: three weights per code, as ``int8`` (padding kept).

    Raises
    ------
    ValueError
        On a code above 31, an index above 13, or negative zero (0b10000).
    """
    c = np.asarray(codes).astype(np.int64)
    if c.ndim != 1:
        raise ValueError("TL2 codes must be one-dimensional")
    bad = (c < 0) | (c > 31) | ((c & 15) > 13) | (c == 16)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"TL2 code {i} ({int(c[i])}) is not valid")
    v = np.where(c >> 4, -(c & 15), c & 15)
    # Balanced-ternary digits of v: w0 * 9 + w1 * 3 + w2.
    out = np.empty((len(c), 3), np.int8)
    r = v.copy()
    for j in (2, 1, 0):
        digit = ((r + 1) % 3) - 1
        out[:, j] = digit
        r = (r - digit) // 3
    return out.reshape(-1)


def pack_tl2(w) -> np.ndarray:
    """TL2 codes packed as a little-endian bit stream, 5 bits per code, zero-filled last byte."""
    codes = tl2_encode(w).astype(np.int64)
    bits = ((codes[:, None] >> np.arange(5)) & 1).reshape(-1)
    bits = np.concatenate([bits, np.zeros(-len(bits) % 8, np.int64)]).reshape(-1, 8)
    return (bits << np.arange(8)).sum(axis=1).astype(np.uint8)


def unpack_tl2(data, count: int) -> np.ndarray:
    """Inverse of :func:`pack_tl2`: the first ``count`` weights as ``int8``."""
    data = _as_bytes(data)
    _check_count(data, count, "tl2")
    groups = -(-count // 3)
    bits = ((data.astype(np.int64)[:, None] >> np.arange(8)) & 1).reshape(-1)[:groups * 5]
    codes = (bits.reshape(-1, 5) << np.arange(5)).sum(axis=1)
    return _check_padding(tl2_decode(codes), count, "tl2")


def tl2_table(x0: int, x1: int, x2: int) -> list[int]:
    """The 14 TL2 partial sums ``E[v]`` for ``v`` = 0..13.

    ``E[v]`` is ``w0 x0 + w1 x1 + w2 x2`` for the weights whose code index is ``v`` (and sign 0);
    built with the ten additions/subtractions of the reference: E1 = x2, E3 = x1, E9 = x0,
    E2 = x1 - x2, E4 = x1 + x2, E(9 +- d) = x0 +- E(d) for d = 1..4. A negative code reads
    ``-E[v]``.
    """
    e = [0] * 14
    e[1], e[3], e[9] = x2, x1, x0
    e[2], e[4] = x1 - x2, x1 + x2
    for d in range(1, 5):
        e[9 + d] = x0 + e[d]
        e[9 - d] = x0 - e[d]
    return e


# --- generic -------------------------------------------------------------------------------------

_PACK = {"2bit": pack_2bit, "trits5": pack_trits5, "tl2": pack_tl2}
_UNPACK = {"2bit": unpack_2bit, "trits5": unpack_trits5, "tl2": unpack_tl2}


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown packing format {fmt!r}; expected one of {sorted(FORMATS)}")
    return fmt


def pack(w, fmt: str) -> np.ndarray:
    """Pack ternary ``w`` in format ``fmt`` (one of :data:`FORMATS`)."""
    return _PACK[_fmt(fmt)](w)


def unpack(data, count: int, fmt: str) -> np.ndarray:
    """Unpack ``count`` weights in format ``fmt``."""
    return _UNPACK[_fmt(fmt)](data, count)


def packed_len(count: int, fmt: str) -> int:
    """Bytes that :func:`pack` produces for ``count`` weights in format ``fmt``."""
    group, bits = FORMATS[_fmt(fmt)]
    return -(-(-(-count // group) * bits) // 8)


def to_int(data) -> int:
    """A packed byte array as one little-endian integer (byte 0 in bits 7:0), as the gateware
    sees a packed weight vector on its input port."""
    return int.from_bytes(bytes(_as_bytes(data)), "little")
