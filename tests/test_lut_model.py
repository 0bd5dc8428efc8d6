"""The table-lookup golden model equals the plain integer dot product, exactly."""

import numpy as np
import pytest

from sw import lut_model as lm
from sw.packing import tl2_table, tl2_decode

FORMATS = [("tl2", 3, True), ("int2", 2, True), ("int2", 3, True), ("int2", 4, True),
           ("int3", 3, True), ("int3", 4, True), ("int4", 2, True), ("int4", 4, True),
           ("int2", 3, False), ("int3", 2, False), ("int4", 4, False)]


def plain(w, x):
    return np.asarray(w, np.int64) @ np.asarray(x, np.int64)


def random_weights(rng, fmt, shape):
    lo, hi = lm.weight_range(fmt)
    return rng.integers(lo, hi + 1, shape)


@pytest.mark.parametrize("fmt,group,sym", FORMATS)
@pytest.mark.parametrize("k", [1, 7, 48, 257])
def test_random_equals_plain_dot(fmt, group, sym, k):
    rng = np.random.default_rng(k * 31 + group)
    w = random_weights(rng, fmt, (9, k))
    x = rng.integers(-127, 128, k)
    assert np.array_equal(lm.lut_gemv(w, x, fmt, group, sym), plain(w, x))


@pytest.mark.parametrize("fmt,group,sym", FORMATS)
def test_edges_equal_plain_dot(fmt, group, sym):
    k = 96
    lo, hi = lm.weight_range(fmt)
    rng = np.random.default_rng(5)
    weights = [np.zeros(k, np.int64), np.full(k, lo), np.full(k, hi),
               np.resize([lo, hi], k), random_weights(rng, fmt, k)]
    for x in (np.full(k, 127), np.full(k, -127), np.zeros(k, np.int64), np.resize([127, -127], k)):
        for w in weights:
            assert lm.lut_dot(w, x, fmt, group, sym) == int(plain(w, x)), (w[:6], x[:6])


@pytest.mark.parametrize("fmt,group,sym", FORMATS)
def test_bounds_are_reached_and_hold(fmt, group, sym):
    # The accumulator and result bounds are attained by extreme inputs and not exceeded.
    k = 60
    lo, hi = lm.weight_range(fmt)
    x = np.full(k, -127)
    w = np.full(k, lo)
    assert abs(lm.lut_dot(w, x, fmt, group, sym)) == lm.result_bound(fmt, k)
    # Accumulated value: dot for TL2, sum (2w + 1) x for bit planes.
    acc = plain(w, x) if fmt == "tl2" else plain(2 * w + 1, x)
    assert abs(acc) == lm.acc_bound(fmt, k)
    assert lm.signed_width(lm.acc_bound(fmt, k)) >= (abs(int(acc))).bit_length() + 1


def test_tl2_table_matches_packing_definition():
    rng = np.random.default_rng(0)
    for x in [(127, 127, 127), (-127, -127, -127), (0, 0, 0), *rng.integers(-127, 128, (50, 3))]:
        t = lm.build_tables(np.asarray(x), "tl2", 3)[0]
        assert list(t) == tl2_table(*map(int, x))


def test_tl2_lookup_decodes_like_packing():
    # Every valid code read through the table gives sum(decoded weights * x).
    x = np.array([101, -37, 59])
    t = lm.build_tables(x, "tl2", 3)
    for code in [c for c in range(32) if (c & 15) <= 13 and c != 16]:
        w = tl2_decode([code])
        assert int(lm.lookup(t, [code], "tl2", 3)[0]) == int(plain(w, x))


@pytest.mark.parametrize("group", [2, 3, 4])
def test_half_table_symmetry(group):
    rng = np.random.default_rng(group)
    x = rng.integers(-127, 128, group)
    half = lm.build_tables(x, "int2", group)
    for p in range(1 << group):
        full = sum(x[j] if (p >> j) & 1 else -x[j] for j in range(group))
        assert int(lm.lookup(half, [p], "int2", group)[0]) == full
        assert full == -sum(x[j] if (~p >> j) & 1 else -x[j] for j in range(group))


@pytest.mark.parametrize("group", [2, 3, 4])
def test_full_table_is_read_directly(group):
    x = np.arange(1, group + 1) * 31
    full = lm.build_tables(x, "int3", group, symmetric=False)
    assert full.shape == (1, 1 << group)
    for p in range(1 << group):
        assert full[0, p] == sum(x[j] if (p >> j) & 1 else -x[j] for j in range(group))
        assert int(lm.lookup(full, [p], "int3", group, symmetric=False)[0]) == full[0, p]


def test_entry_widths():
    assert lm.entry_width("tl2", 3) == 10
    assert lm.entry_width("int2", 4) == 10 and lm.entry_width("int4", 3) == 10
    assert lm.entry_width("int3", 2) == 9
    assert lm.table_entries("tl2", 3) == 14 and lm.table_entries("int2", 4) == 8


def test_negate_if():
    e = np.arange(-512, 512)
    assert np.array_equal(lm.negate_if(e, 0), e)
    assert np.array_equal(lm.negate_if(e[1:], 1), -e[1:])


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="weight format"):
        lm.check_format("int8", 3)
    with pytest.raises(ValueError, match="TL2"):
        lm.check_format("tl2", 4)
    with pytest.raises(ValueError, match="127"):
        lm.build_tables(np.array([-128, 0, 0]), "tl2", 3)
    with pytest.raises(ValueError, match="symmetric"):
        lm.check_format("tl2", 3, symmetric=False)
    with pytest.raises(ValueError, match="int2"):
        lm.encode_weights(np.array([2]), "int2")
