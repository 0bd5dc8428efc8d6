"""BitMoD quantiser, code formats, PE term decomposition and the fixed-point dot product.

Expected values are worked out by hand in the comments, not taken from the code under test.
"""

import numpy as np
import pytest
import torch

from models.bitmod import (BITMOD_CANDIDATES, CODE_BITS, DType, TERMS_PER_WEIGHT,
                           bitmod_dequantize, bitmod_dot_fixed, bitmod_quantize, decode, encode,
                           fixed_to_scale, grid, group_partial_sums, round_to_grid,
                           rshift_round_half_away, scale_to_fixed, weight_terms)

G = 128


def group(*values, scale=1.0):
    """A 128-weight group: ``values`` then zeros (zeros are exact on every grid)."""
    w = np.zeros(G)
    w[:len(values)] = values
    return w * scale


# --- grids and codes ---------------------------------------------------------------------------

def test_grids():
    assert grid(DType.INT3).tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert grid(DType.INT4).tolist() == list(range(-7, 8))
    assert grid(DType.FP3_ER_POS).tolist() == [-4, -2, -1, 0, 1, 2, 3, 4]
    assert grid(DType.FP3_ER_NEG).tolist() == [-4, -3, -2, -1, 0, 1, 2, 4]
    assert grid(DType.FP3_EA_POS).tolist() == [-4, -2, -1, 0, 1, 2, 4, 6]
    assert grid(DType.FP3_EA_NEG).tolist() == [-6, -4, -2, -1, 0, 1, 2, 4]
    fp4 = [-12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12]
    assert grid(DType.FP4_ER_POS).tolist() == sorted(fp4 + [10])
    assert grid(DType.FP4_ER_NEG).tolist() == sorted(fp4 + [-10])
    assert grid(DType.FP4_EA_POS).tolist() == sorted(fp4 + [16])
    assert grid(DType.FP4_EA_NEG).tolist() == sorted(fp4 + [-16])
    assert grid(DType.TERNARY).tolist() == [-1, 0, 1]
    assert grid(DType.INT8).tolist() == list(range(-128, 128))


def test_code_formats():
    # Ternary: w + 1.
    assert decode([0, 1, 2], DType.TERNARY).tolist() == [-1, 0, 1]
    # INT3/INT4 sign-magnitude: 0b111 = -3, 0b1111 = -7, "-0" reads 0.
    assert decode([3, 7, 4], DType.INT3).tolist() == [3, -3, 0]
    assert decode([7, 15, 8, 9], DType.INT4).tolist() == [7, -7, 0, -1]
    # INT8 two's complement.
    assert decode([0x7F, 0x80, 0xFF], DType.INT8).tolist() == [127, -128, -1]
    # FP3: magnitudes 0,1,2,4; "-0" is the extra value.
    assert decode([3, 7, 4], DType.FP3_ER_POS).tolist() == [4, -4, 3]
    assert decode([4], DType.FP3_ER_NEG).tolist() == [-3]
    assert decode([4], DType.FP3_EA_POS).tolist() == [6]
    assert decode([4], DType.FP3_EA_NEG).tolist() == [-6]
    # FP4: magnitudes 0,1,2,3,4,6,8,12.
    assert decode([5, 7, 15, 8], DType.FP4_ER_POS).tolist() == [6, 12, -12, 10]
    assert decode([8], DType.FP4_ER_NEG).tolist() == [-10]
    assert decode([8], DType.FP4_EA_POS).tolist() == [16]
    assert decode([8], DType.FP4_EA_NEG).tolist() == [-16]
    # encode is the inverse on the grid and prefers "+0" for zero.
    for dt in DType:
        g = grid(dt)
        assert decode(encode(g, dt), dt).tolist() == g.tolist()
        assert int(encode([0], dt)[0]) == (1 if dt == DType.TERNARY else 0)
    with pytest.raises(ValueError, match="not on the"):
        encode([5], DType.FP3_ER_POS)
    with pytest.raises(ValueError, match="codes must be"):
        decode([8], DType.INT3)


def test_round_to_grid_midpoints_go_lower():
    g = grid(DType.INT3)
    assert round_to_grid([0.5, -0.5, 2.5, -2.5, 1.5, 0.49, -0.51, 9.0, -9.0], g).tolist() == \
        [0, -1, 2, -3, 1, 0, -1, 3, -3]
    g = grid(DType.FP3_ER_POS)            # -4 -2 -1 0 1 2 3 4
    assert round_to_grid([-3.0, 3.5, 2.5, -1.5], g).tolist() == [-4, 3, 2, -2]


# --- quantiser ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values,bits,dtype", [
    # Each group is exact on the winning grid (squared error 0) and not on any other; the
    # comments give the winner's nearest rival.
    ((3, 2, 1, -3, -2, -1), 3, DType.INT3),        # ER+: scale 0.75, 2 -> 2.25
    ((4, 3, 2, 1), 3, DType.FP3_ER_POS),           # INT3: scale 4/3, 3 -> 2.67
    ((4, -3, 2, 1), 3, DType.FP3_ER_NEG),          # ER+: -3 is a midpoint -> -4
    ((6, 4, 2, 1, -4), 3, DType.FP3_EA_POS),       # ER: scale 1.5, 4 -> 4.5
    ((-6, 4, 2, 1, -4), 3, DType.FP3_EA_NEG),
    ((7, 5, 3, 1, -7), 4, DType.INT4),             # FP4: scale 7/12, 5 -> 8.57 -> 8
    ((12, 10, 6, 3, 1), 4, DType.FP4_ER_POS),      # ER-: 10 is a midpoint -> 8
    ((12, -10, 6, 3, 1), 4, DType.FP4_ER_NEG),
    ((16, 12, 8, 1), 4, DType.FP4_EA_POS),         # ER+: scale 4/3, 12 -> 9 midpoint -> 8
    ((-16, 12, 8, 1), 4, DType.FP4_EA_NEG),
])
def test_each_candidate_wins(values, bits, dtype):
    q = bitmod_quantize(group(*values, scale=0.25), bits=bits)
    assert q.dtypes.tolist() == [dtype]
    assert q.scales.tolist() == [0.25]                     # absmax / max|grid| = max|values|/..
    assert q.values[:len(values)].tolist() == list(values)
    assert not q.values[len(values):].any()
    np.testing.assert_array_equal(bitmod_dequantize(q), group(*values, scale=0.25))


def test_hand_codes_and_midpoints_in_a_group():
    # INT3 wins with squared error 0.5 (scale 1): 0.5 -> 0 and -0.5 -> -1 (midpoints go lower).
    # ER+ (scale 0.75) errs 5 * 0.0625 + 0.25 = 0.5625, ER- the same, EA+/EA- at least 1.
    q = bitmod_quantize(group(3, 2, 1, -3, -2, -1, 0.5, -0.5), bits=3)
    assert q.dtypes.tolist() == [DType.INT3] and q.scales.tolist() == [1.0]
    assert q.values[:8].tolist() == [3, 2, 1, -3, -2, -1, 0, -1]
    assert q.codes[:8].tolist() == [3, 2, 1, 7, 6, 5, 0, 5]     # sign-magnitude
    # FP4 ER- exact group: codes 12 -> 0b0111, -10 -> "-0" 0b1000, 6 -> 0b0101, 3 -> 3, 1 -> 1.
    q = bitmod_quantize(group(12, -10, 6, 3, 1, scale=0.5), bits=4)
    assert q.dtypes.tolist() == [DType.FP4_ER_NEG]
    assert q.codes[:5].tolist() == [7, 8, 5, 3, 1]


def test_ties_keep_the_earlier_candidate():
    # 4, 2, 1, -4, -2, -1 is exact on FP3 ER+ and ER- (both scale 1, error 0): ER+ comes first.
    q = bitmod_quantize(group(4, 2, 1, -4, -2, -1), bits=3)
    assert q.dtypes.tolist() == [DType.FP3_ER_POS]
    # 4 bits: 12, 8, 4, -12 is exact on FP4 ER+ and ER- (scale 1); INT4 (scale 12/7: 8 -> 4.67)
    # and EA+/EA- (scale 0.75: 8 -> 10.67 -> 12) are not: ER+ wins.
    q = bitmod_quantize(group(12, 8, 4, -12), bits=4)
    assert q.dtypes.tolist() == [DType.FP4_ER_POS]


def test_all_zero_group():
    w = np.stack([group(), group(1, -1)]).reshape(-1)        # two groups in one row
    q = bitmod_quantize(w, bits=4)
    assert q.dtypes.tolist() == [DType.INT4, DType.INT4]     # first candidate for the zero group
    assert q.scales[0] == 0.0 and not q.codes[:G].any()
    assert q.scales[1] == pytest.approx(1 / 7)
    assert bitmod_dequantize(q)[:G].tolist() == [0.0] * G


def test_shapes_torch_input_and_errors():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2 * G))
    q = bitmod_quantize(torch.tensor(w), bits=3)
    assert q.codes.shape == (3, 2 * G) and q.dtypes.shape == (3, 2) and q.scales.shape == (3, 2)
    assert set(q.dtypes.reshape(-1).tolist()) <= set(BITMOD_CANDIDATES[3])
    # Each group's scale is its absmax over its datatype's max|grid|.
    for r in range(3):
        for g in range(2):
            dt = DType(int(q.dtypes[r, g]))
            gmax = {DType.INT3: 3, DType.FP3_ER_POS: 4, DType.FP3_ER_NEG: 4,
                    DType.FP3_EA_POS: 6, DType.FP3_EA_NEG: 6}[dt]
            assert q.scales[r, g] == np.abs(w[r, g * G:(g + 1) * G]).max() / gmax
    deq = bitmod_dequantize(q)
    # Every weight lies within 2 grid units of its dequantised value: half the widest gap (2 <-> 4)
    # is 1; an EA group clips its short side at -4 or +4 while weights reach 6 units.
    assert np.all(np.abs(deq - w) <= np.repeat(q.scales, G, axis=1) * 2.0 + 1e-12)
    with pytest.raises(ValueError, match="multiple"):
        bitmod_quantize(np.zeros(100))
    with pytest.raises(ValueError, match="3 or 4"):
        bitmod_quantize(np.zeros(G), bits=2)


def test_4bit_error_is_small_on_gaussian_weights():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 4 * G))
    q = bitmod_quantize(w, bits=4)
    rel = np.linalg.norm(bitmod_dequantize(q) - w) / np.linalg.norm(w)
    assert rel < 0.105         # INT4 alone gives 0.119 on these weights, the mixture 0.098


# --- PE terms -----------------------------------------------------------------------------------

def test_weight_terms_sum_to_every_value():
    for dt in DType:
        for code in range(1 << CODE_BITS[dt]):
            v = int(decode([code], dt)[0])
            terms = weight_terms(v, dt)
            assert len(terms) == TERMS_PER_WEIGHT[dt]
            total = sum((-(1 << s) if n else (1 << s)) for n, s in (t for t in terms if t))
            assert total == v, (dt.name, code, terms)
            for j, t in enumerate(terms):
                if t and dt == DType.INT8:
                    assert t[1] in (2 * j, 2 * j + 1)           # Booth digit j: 4**j or 2*4**j
                elif t:
                    assert 0 <= t[1] <= 4
    # Hand examples: 7 = 8 - 1; -12 = -8 - 4; INT8 -128 = -2 * 4**3; 127 = 2*64 - 1*1 ...
    assert weight_terms(7, DType.INT4) == [(0, 3), (1, 0)]
    assert weight_terms(-12, DType.FP4_ER_POS) == [(1, 3), (1, 2)]
    assert weight_terms(16, DType.FP4_EA_POS) == [(0, 4), None]
    assert weight_terms(-128, DType.INT8) == [None, None, None, (1, 7)]
    # 127 = 0b01111111: digits d0 = -1, d1 = 0, d2 = 0, d3 = +2 -> -1 + 128.
    assert weight_terms(127, DType.INT8) == [(1, 0), None, None, (0, 7)]


# --- fixed point --------------------------------------------------------------------------------

def test_rshift_round_half_away():
    assert [rshift_round_half_away(v, s) for v, s in
            [(5, 1), (-5, 1), (3, 1), (-3, 1), (1, 2), (2, 2), (-2, 2), (-1, 2), (7, 0), (-7, 0)]] \
        == [3, -3, 2, -2, 0, 1, -1, 0, 7, -7]


def test_scale_to_fixed():
    assert scale_to_fixed(1.0) == (32768, 15)
    assert scale_to_fixed(0.75) == (49152, 16)
    assert scale_to_fixed(0.1, frac_bits=8) == (52429, 11)     # 25.6 * 2048 = 52428.8
    assert scale_to_fixed((2 ** 16 - 0.5) / 2 ** 15) == (32768, 14)   # rounding carries
    assert scale_to_fixed(0.0) == (0, 0)
    assert scale_to_fixed(2.0 ** -40) == (0, 31)               # below the format: flushes to 0
    assert scale_to_fixed(3 * 2.0 ** -30) == (3 * 2 ** 1, 31)  # 6 * 2**-31, denormal mantissa
    assert fixed_to_scale(52429, 11, 8) == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(ValueError, match="mantissa"):
        scale_to_fixed(70000.0)
    with pytest.raises(ValueError):
        scale_to_fixed(-1.0)


def test_bitmod_dot_fixed_by_hand():
    codes = np.zeros(3 * G, dtype=np.int64)
    x = np.zeros(3 * G, dtype=np.int64)
    # Group 0, INT3: values 3, -2, 1 (codes 3, 6, 1) times x 10, 20, -5 -> P = 30 - 40 - 5 = -15;
    # scale (3, 1): -45 / 2 = -22.5 -> -23 (half away from zero).
    codes[0:3] = [3, 6, 1]
    x[0:3] = [10, 20, -5]
    # Group 1, ternary: values +1, -1 (codes 2, 0; the rest code 1 = 0) times 7, 9 -> -2, unscaled.
    codes[G:2 * G] = 1
    codes[G:G + 2] = [2, 0]
    x[G:G + 2] = [7, 9]
    # Group 2, FP4 EA+: code 8 = +16 times -3 = -48; code 0b1111 = -12 times -128 = 1536;
    # P = 1488, scale (5, 2): 7440 / 4 = 1860.
    codes[2 * G:2 * G + 2] = [8, 15]
    x[2 * G:2 * G + 2] = [-3, -128]
    dtypes = [DType.INT3, DType.TERNARY, DType.FP4_EA_POS]
    assert group_partial_sums(codes, dtypes, x) == [-15, -2, 1488]
    assert bitmod_dot_fixed(codes, dtypes, [(3, 1), (999, 9), (5, 2)], x) == -23 - 2 + 1860
    with pytest.raises(ValueError, match="int8"):
        bitmod_dot_fixed(codes, dtypes, [(3, 1)] * 3, x * 2)
    with pytest.raises(ValueError, match="out of range"):
        bitmod_dot_fixed(codes, dtypes, [(1 << 16, 0)] * 3, x)


def test_fixed_dot_tracks_the_float_dot():
    rng = np.random.default_rng(2)
    w = rng.standard_normal(8 * G) * 0.02
    x = rng.integers(-127, 128, 8 * G)
    for bits in (3, 4):
        q = bitmod_quantize(w, bits=bits)
        frac = 20
        sf = [scale_to_fixed(s, frac) for s in q.scales]
        got = bitmod_dot_fixed(q.codes, q.dtypes, sf, x) / 2 ** frac
        want = float(bitmod_dequantize(q) @ x)
        # Each group's scale is off by at most 2**-16 relative, plus 0.5 LSB of rounding.
        assert abs(got - want) <= 2 ** -15 * np.abs(bitmod_dequantize(q) * x).sum() + 8 / 2 ** frac
