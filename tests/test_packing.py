"""Packing formats: round trips, the exhaustive trits5 decode identity, padding and bad input."""

import itertools

import numpy as np
import pytest

from sw import packing
from sw.packing import (TRITS5_VALID_BYTES, pack, pack_2bit, pack_tl2, pack_trits5, packed_len,
                        tl2_decode, tl2_encode, tl2_table, trits5_decode_byte, trits5_encode_group,
                        unpack, unpack_2bit, unpack_trits5)

FMTS = sorted(packing.FORMATS)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 63, 64, 65, 1000])
def test_round_trip_random(fmt, n):
    rng = np.random.default_rng(n)
    w = rng.integers(-1, 2, n).astype(np.int8)
    data = pack(w, fmt)
    assert data.dtype == np.uint8 and len(data) == packed_len(n, fmt)
    np.testing.assert_array_equal(unpack(data, n, fmt), w)
    np.testing.assert_array_equal(unpack(bytes(data), n, fmt), w)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("value", [-1, 0, 1])
def test_round_trip_constant(fmt, value):
    for n in (1, 29, 30, 31):
        w = np.full(n, value, np.int8)
        np.testing.assert_array_equal(unpack(pack(w, fmt), n, fmt), w)


def test_2bit_layout():
    # code = w + 1, first weight in bits 1:0.
    assert list(pack_2bit([-1, 0, 1, -1])) == [0b00_10_01_00]
    assert list(pack_2bit([1])) == [0b01_01_01_10]  # padded with zero weights (code 1)
    assert packed_len(9, "2bit") == 3


def test_trits5_exhaustive_decode_identity():
    # For every one of the 243 groups of five trits, the stored byte decodes back by the
    # multiply-shift rule t_n = (((byte * 3^n) mod 256) * 3) >> 8.
    seen = set()
    for trits in itertools.product(range(3), repeat=5):
        q = sum(t * 3 ** (4 - n) for n, t in enumerate(trits))
        byte = -(-q * 256 // 243)
        assert byte <= 255
        assert [(((byte * 3 ** n) % 256) * 3) >> 8 for n in range(5)] == list(trits)
        assert trits5_encode_group(np.array(trits) - 1) == byte
        assert trits5_decode_byte(byte) == list(trits)
        seen.add(byte)
    assert len(seen) == 243 and seen == TRITS5_VALID_BYTES


def test_trits5_layout():
    # Weight n of a group is trit n, weighted 3^(4-n): the first weight is the most significant.
    assert list(pack_trits5([-1, -1, -1, -1, -1])) == [0]
    assert list(pack_trits5([1, 1, 1, 1, 1])) == [255]          # q = 242 -> ceil(242*256/243)
    assert list(pack_trits5([0, -1, -1, -1, -1])) == [-(-81 * 256 // 243)]
    assert list(pack_trits5([1])) == [trits5_encode_group([1, 0, 0, 0, 0])]
    assert packed_len(11, "trits5") == 3


def test_tl2_codes():
    for w in itertools.product((-1, 0, 1), repeat=3):
        v = 9 * w[0] + 3 * w[1] + w[2]
        code = int(tl2_encode(np.array(w, np.int8))[0])
        assert code == ((16 if v < 0 else 0) | abs(v))
        assert list(tl2_decode([code])) == list(w)
    assert packed_len(3, "tl2") == 1 and packed_len(6, "tl2") == 2 and packed_len(24, "tl2") == 5


def test_tl2_table_reproduces_dot_product():
    rng = np.random.default_rng(3)
    for _ in range(200):
        x = [int(v) for v in rng.integers(-127, 128, 3)]
        w = rng.integers(-1, 2, 3)
        code = int(tl2_encode(w.astype(np.int8))[0])
        e = tl2_table(*x)[code & 15]
        assert (-e if code >> 4 else e) == int(np.dot(w, x))


@pytest.mark.parametrize("fmt", FMTS)
def test_packed_dot_product_is_exact(fmt):
    rng = np.random.default_rng(7)
    w = rng.integers(-1, 2, 517).astype(np.int8)
    x = rng.integers(-127, 128, 517)
    back = unpack(pack(w, fmt), len(w), fmt)
    assert int(np.dot(back.astype(np.int64), x)) == int(np.dot(w.astype(np.int64), x))


@pytest.mark.parametrize("fmt", FMTS)
def test_rejects_non_ternary(fmt):
    with pytest.raises(ValueError, match="ternary"):
        pack(np.array([0, 1, 2], np.int8), fmt)
    with pytest.raises(ValueError, match="ternary"):
        pack(np.array([-2]), fmt)
    with pytest.raises(TypeError, match="integer"):
        pack(np.array([0.0, 1.0]), fmt)
    with pytest.raises(ValueError, match="one-dimensional"):
        pack(np.zeros((2, 2), np.int8), fmt)
    with pytest.raises(ValueError, match="need"):
        unpack(pack(np.zeros(8, np.int8), fmt)[:-1], 8, fmt)
    with pytest.raises(ValueError, match="unknown packing format"):
        pack([0], fmt + "x")


def test_rejects_bad_codes():
    with pytest.raises(ValueError, match="code 3"):
        unpack_2bit([0b11], 1)
    with pytest.raises(ValueError, match="padding"):
        unpack_2bit([0b10_01_01_01], 1)  # weight 3 (padding) is +1
    invalid = sorted(set(range(256)) - TRITS5_VALID_BYTES)
    assert len(invalid) == 13
    with pytest.raises(ValueError, match="not a valid trits5"):
        unpack_trits5([invalid[0]], 5)
    with pytest.raises(ValueError, match="padding"):
        unpack_trits5(pack_trits5([0, 0, 0, 0, 1]), 4)
    with pytest.raises(ValueError, match="not valid"):
        tl2_decode([16])  # negative zero
    with pytest.raises(ValueError, match="not valid"):
        tl2_decode([14])
    with pytest.raises(ValueError, match="padding"):
        packing.unpack_tl2(pack_tl2([0, 0, 1]), 2)
