"""Fixed-point primitives of the integer reference: rounding, saturation, tables, rsqrt, reciprocal."""

import numpy as np
import pytest
import torch

from models import fixedpoint as fx
from models.quant import round_half_away as torch_round_half_away


# --------------------------------------------------------------------------- rounding shift
def _ref_round_shift(x: int, s: int) -> int:
    """Exact rational reference: round(x / 2**s), ties away from zero (Python ints)."""
    if s <= 0:
        return x << -s
    q, r = divmod(abs(x), 1 << s)
    if 2 * r >= (1 << s):
        q += 1
    return q if x >= 0 else -q


@pytest.mark.parametrize("x,s,expected", [
    (1, 1, 1), (-1, 1, -1),          # +-0.5 -> +-1
    (3, 1, 2), (-3, 1, -2),          # +-1.5 -> +-2
    (5, 1, 3), (-5, 1, -3),          # +-2.5 -> +-3 (not to even)
    (2, 2, 1), (-2, 2, -1),          # +-0.5
    (6, 2, 2), (-6, 2, -2),          # +-1.5
    (10, 2, 3), (-10, 2, -3),        # +-2.5
    (5, 2, 1), (-5, 2, -1),          # +-1.25 (below a tie)
    (7, 2, 2), (-7, 2, -2),          # +-1.75
    (1, 2, 0), (-1, 2, 0),           # +-0.25
    (0, 5, 0),
    (3, 0, 3), (-3, -2, -12),        # no shift / left shift
    ((1 << 40) + (1 << 19), 20, (1 << 20) + 1), (-(1 << 40) - (1 << 19), 20, -(1 << 20) - 1),
])
def test_round_shift_ties(x, s, expected):
    assert int(fx.round_shift(x, s)) == expected
    assert int(fx.round_shift(np.array([x]), np.array([s]))[0]) == expected


def test_round_shift_matches_exact_reference_and_float_rule():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(-(1 << 40), 1 << 40, 4000), np.arange(-64, 65)])
    for s in range(-3, 12):
        got = fx.round_shift(x, s)
        assert [int(g) for g in got] == [_ref_round_shift(int(v), s) for v in x]
    # per-element shifts (the vector unit shifts every token by its own amount)
    s = rng.integers(-4, 20, x.shape[0])
    got = fx.round_shift(x, s)
    assert [int(g) for g in got] == [_ref_round_shift(int(v), int(k)) for v, k in zip(x, s)]
    # same rule as the float quantiser of models.quant
    xs = np.arange(-4096, 4097)
    t = torch_round_half_away(torch.tensor(xs / 16.0, dtype=torch.float64)).numpy()
    np.testing.assert_array_equal(fx.round_shift(xs, 4), t.astype(np.int64))
    np.testing.assert_array_equal(fx.round_half_away(xs / 16.0), t)


def test_round_half_away_float_matches_torch():
    vals = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994,
                     1e300, -3.7, 3.2, 0.0])
    np.testing.assert_array_equal(fx.round_half_away(vals), torch_round_half_away(torch.tensor(vals)).numpy())
    np.testing.assert_array_equal(fx.quantize([0.5, -0.5, 1.0, -300.0, 300.0], 1, bits=8), [1, -1, 2, -128, 127])


def test_saturate():
    x = np.array([-(1 << 17) - 5, -(1 << 17), -(1 << 17) + 1, 0, (1 << 17) - 1, 1 << 17, 1 << 30])
    np.testing.assert_array_equal(fx.saturate(x, 18),
                                  [-(1 << 17), -(1 << 17), -(1 << 17) + 1, 0, (1 << 17) - 1, (1 << 17) - 1, (1 << 17) - 1])
    np.testing.assert_array_equal(fx.saturate([-200, 200, -128, 127], 8), [-128, 127, -128, 127])


def test_bit_length_and_mant17():
    vals = [0, 1, 2, 3, 4, 255, 256, (1 << 52) - 1, 1 << 52, 12345678901]
    assert list(fx.bit_length(np.array(vals))) == [v.bit_length() for v in vals]
    with pytest.raises(ValueError):
        fx.bit_length(np.array([-1]))
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.integers(1, 1 << 50, 2000), [1, (1 << 17) - 1, (1 << 18) - 1, 1 << 17]])
    m, e = fx.normalize_mant17(x)
    assert np.all((m >= 1 << 16) & (m < 1 << 17))
    rel = np.abs(m * np.exp2(e) - x) / x
    assert rel.max() <= 2.0 ** -17
    m0, e0 = fx.normalize_mant17(np.array([0]))
    assert m0[0] == 0 and e0[0] == 0


# --------------------------------------------------------------------------- reciprocal / rsqrt
def test_recip_exhaustive():
    mn = np.arange(1 << 15, 1 << 16)
    r = fx.recip_norm(mn)
    err = np.abs(r - 2.0 ** 32 / mn)
    assert err.max() < 1.0, err.max()            # documented bound: < 1 LSB
    assert (err / (2.0 ** 32 / mn)).max() < 1.6e-5
    assert r.min() > 1 << 16 and r.max() <= 1 << 17
    assert fx.RECIP_TABLE.shape == (256,) and fx.RECIP_TABLE.max() < 1 << 17
    for bad in ((1 << 15) - 1, 1 << 16):
        with pytest.raises(ValueError):
            fx.recip_norm(np.array([bad]))


def test_rsqrt_exhaustive():
    ms = np.arange(1 << 14, 1 << 16)
    q = fx.rsqrt_norm(ms)
    exact = 2.0 ** 23 / np.sqrt(ms)
    err = np.abs(q - exact)
    assert err.max() < 1.0, err.max()
    assert (err / exact).max() < 3.1e-5
    assert q.min() >= 1 << 15 and q.max() <= 1 << 16
    assert fx.RSQRT_TABLE.shape == (384,) and fx.RSQRT_TABLE.max() < 1 << 17
    for bad in ((1 << 14) - 1, 1 << 16):
        with pytest.raises(ValueError):
            fx.rsqrt_norm(np.array([bad]))


# --------------------------------------------------------------------------- sigmoid / SiLU
SIG_BOUND = 1.2e-5


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("frac", [11, 24])
def test_sigmoid_whole_range(frac):
    if frac == 11:
        y = np.arange(-(1 << 17), 1 << 17)              # every 18-bit input
    else:
        rng = np.random.default_rng(3)
        y = np.concatenate([rng.integers(-(1 << 31), 1 << 31, 200000), [-(1 << 31), (1 << 31) - 1, 0, 1, -1],
                            np.arange(-(1 << 12), 1 << 12) << 12])
    p = fx.sigmoid_q16(y, frac)
    err = np.abs(p / 65536.0 - _sig(y / 2.0 ** frac))
    assert err.max() <= SIG_BOUND, err.max()
    assert p.min() >= 0 and p.max() <= 65536
    np.testing.assert_array_equal(fx.sigmoid_q16(-y, frac) + p, 65536)   # exact odd symmetry
    order = np.argsort(y, kind="stable")
    assert np.all(np.diff(p[order]) >= 0)                                 # monotonic


def test_sigmoid_table_contents():
    t = fx.sigmoid_table()
    assert t.shape == (1025,) and t[0] == 0 and t.max() <= 1 << 17 and np.all(np.diff(t) >= 0)
    k = np.arange(1025)
    np.testing.assert_array_equal(t, fx.round_half_away((_sig(k / 64.0) - 0.5) * 2 ** 18))
    with pytest.raises(ValueError):
        fx.sigmoid_q16(np.array([1]), 5)


def test_silu_whole_range():
    y = np.arange(-(1 << 17), 1 << 17)
    x = y / 2.0 ** 11
    out = fx.silu_fx(y, 11, 11) / 2.0 ** 11
    err = np.abs(out - x * _sig(x))
    bound = np.abs(x) * SIG_BOUND + 2.0 ** -12
    assert np.all(err <= bound)
    # state format output (Q.24) of the input gate path
    out24 = fx.silu_fx(y, 11, 24) / 2.0 ** 24
    assert np.all(np.abs(out24 - x * _sig(x)) <= np.abs(x) * SIG_BOUND + 2.0 ** -25)
