"""Bit-exact integer reference ("intref") of the ternary MatMul-free LM accelerator.

:class:`IntRefModel` defines, bit for bit, what the FPGA computes for one token step: integer
operations only (numpy ``int64``), fixed widths stated in ``docs/arithmetic.md``, round half
away from zero everywhere (:func:`models.fixedpoint.round_shift`), multiplies of at most
18 x 18 bits except where the docs say otherwise, no division, and non-linearities by table.
It is batched over a leading batch dimension and deterministic.

Data flow of one token (formats from :class:`IntFormats`; ``H`` = residual, ``A`` = activation
with per-matrix calibrated fractional bits, ``S`` = state, all signed fixed point)::

    h = emb_mant[tok] << emb_shift[tok]                                    H
    per layer l:
        i, f, g = NQL(h; attn_norm.w, {i,f,g}_proj)                        A (one shared pass)
        om  = round_shift(OM_LB[l] * (1 - sigmoid(f)), 16)                 Q0.16, = 1 - f'
        s   = s + round_shift(om * (silu(i) - s), 16)                      S  (= f' s + (1-f') silu(i))
        h   = h + NQL(acc_g * silu_block(s); g_norm.w, o_proj)             H  (g's exact accumulator)
        gate, up = NQL(h; mlp_norm.w, gate_proj)                           A
        h   = h + NQL(silu_block(gate) * up; 1, down_proj)                 H
    logits = NQL(h; norm.w, lm_head)                                       Q.logit_frac
    next   = first index of the maximum logit

``NQL(z; wp, X)`` ("normalise, quantise, ternary linear") is RMSNorm(s) + BitLinear ``X`` in
integers. Its key property: every positive per-token factor cancels in
``x_q = round(127 x_n / max|x_n|)``, so the int8 codes depend only on ``z * wc`` with the
host-precomputed product ``wc = wp * X.norm.weight``; the reciprocal square root only enters
the single per-token output scale. Steps (per token; ``K`` = input length)::

    z'  = round_shift(z, bit_length(max|z|) - 16)                 block normalisation, |z'| <= 2**16
    ss  = sum(round_shift(z' * WP, 17) ** 2)                      sum of squares, < 2**45
    ss  = ms * 2**k, k even, 2**14 <= ms < 2**16;   q = rsqrt_norm(ms)
    for each consumer X (own WC):
        u   = z' * WC;  m = max|u| = mn * 2**t  (2**15 <= mn < 2**16, truncated)
        x_q = clamp(round_shift(round_shift(u, t) * Rq, 25), -127, 127),  Rq = round_shift(127 * recip_norm(mn), 7)
        acc = W_t @ x_q                                            exact, |acc| <= 127 K
        S   = C_X * (mn * q)  as a 17-bit mantissa and exponent    (one per token and matrix)
        y   = sat(round_shift(acc * S_mant, -(S_exp + F_out)))

with ``C_X = beta * sqrt(K) / 127 * 2**(Ep - Ec - 17)`` a host constant. The RMSNorm epsilon is
kept only where it matters, before down_proj (a host constant added to ``ss``); elsewhere its
relative effect is ~1e-6 (``docs/arithmetic.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fixedpoint import (
    RECIP_TABLE,
    RSQRT_TABLE,
    SIGMOID_FRAC,
    SIGMOID_ONE,
    SIGMOID_TABLE,
    bit_length,
    normalize_mant17,
    recip_norm,
    round_half_away,
    round_shift,
    rsqrt_norm,
    saturate,
    sigmoid_q16,
    silu_fx,
    to_float,
)

__all__ = [
    "IntFormats",
    "IntRefModel",
    "argmax_first",
    "silu_block",
    "block_normalize",
    "rsqrt_sum_squares",
    "int8_codes",
    "output_scale",
    "block_float",
    "mant17_of_float",
    "sigmoid_table",
    "recip_table",
    "rsqrt_table",
    "to_float",
    "Z_NORM_BITS",
    "CALIBRATION_TEXT",
    "WEIGHT_MANT_BITS",
]

#: Block normalisation target: ``max|z'|`` has this bit length (so ``|z'| <= 2**16``, 18-bit signed).
Z_NORM_BITS = 16
#: Norm-weight mantissas: signed, ``2**16 <= max|W| <= 2**17 - 1`` (18-bit signed).
WEIGHT_MANT_BITS = 18
_I64 = np.int64

#: The calibration text is cut into this many sequences, run as one batch.
CALIBRATION_CHUNKS = 8

#: Built-in calibration text (plain English prose written for this project, 1 KB) on which
#: :class:`IntRefModel` measures the output range of every A-format BitLinear. Fixed, so that
#: the host compiler and the reference choose the same formats.
CALIBRATION_TEXT = (
    b"The old harbour town woke slowly that morning. Fishermen carried their nets down to the "
    b"water, and the baker opened his shutters to let the smell of bread into the street. "
    b"\"Will you come with us?\" asked the boy, but his sister shook her head and said nothing. "
    b"She had promised her mother to mend the sails before noon, and a promise, she thought, "
    b"was worth more than a day at sea.\n\nBy the afternoon the wind had turned. Clouds came in "
    b"from the west, grey and heavy, and the gulls flew low over the roofs. In the tavern the men "
    b"spoke of storms they had known: the winter of the great flood, the night the lighthouse "
    b"went dark, the ship that never came home. WHAT SHALL WE DO? cried one of them, and the "
    b"others laughed, for they had heard the question many times before.\n\nThe girl finished "
    b"her work as the first drops fell. She folded the canvas, counted the stitches twice, and "
    b"walked home along the wall, where the sea was beating on the stones: one, two, three, "
    b"four; again and again, as it had for a thousand years, and as it will for a thousand more.\n"
)


def sigmoid_table() -> np.ndarray:
    """Sigmoid table as loaded into block RAM (1025 x 18-bit unsigned, Q0.18 of sigmoid - 1/2)."""
    return SIGMOID_TABLE.copy()


def recip_table() -> np.ndarray:
    """Reciprocal seed table (256 x 17-bit unsigned), see :func:`models.fixedpoint.recip_norm`."""
    return RECIP_TABLE.copy()


def rsqrt_table() -> np.ndarray:
    """Reciprocal-square-root seed table (384 x 17-bit unsigned), see :func:`models.fixedpoint.rsqrt_norm`."""
    return RSQRT_TABLE.copy()


@dataclass(frozen=True)
class IntFormats:
    """Widths and fractional bits of the integer datapath (all signed two's complement).

    Parameters
    ----------
    h_bits, h_frac : int
        Residual stream ``h`` and the outputs of o_proj / down_proj: Q11.20 in 32 bits.
    act_bits, act_frac : int
        BitLinear outputs feeding the vector unit (i, f, g, gate, up): 18-bit signed. Each such
        BitLinear gets its own fractional bits from a calibration run (see
        :class:`IntRefModel`); ``act_frac`` (Q6.11, range [-64, 64)) is used without
        calibration and as the format of the calibration run itself.
    act_headroom_bits, act_frac_min, act_frac_max : int
        Calibration: the range of each A output is at least ``2**act_headroom_bits`` times the
        largest magnitude seen, with its fractional bits clipped to
        ``[act_frac_min, act_frac_max]``.
    state_bits : int
        Recurrent state ``s`` of layer ``l``: ``state_bits`` wide with
        ``state_frac(l) = frac(i_proj of l) + state_bits - act_bits`` fractional bits, i.e. the
        integer range of that layer's ``i`` format and 14 more fractional bits (Q6.25 for
        ``frac(i) = 11``). Then ``|silu(i)| < 2**(state_bits-1)`` in the state format, and the
        state, a convex combination of such values, cannot overflow.
    logit_bits, logit_frac : int
        LM-head outputs: Q15.16 in 32 bits.
    emb_bits : int
        Embedding mantissas (signed), one power-of-two shift per row.
    """

    h_bits: int = 32
    h_frac: int = 20
    act_bits: int = 18
    act_frac: int = 11
    act_headroom_bits: int = 3
    act_frac_min: int = 8
    act_frac_max: int = 16
    state_bits: int = 32
    logit_bits: int = 32
    logit_frac: int = 16
    emb_bits: int = 16

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"IntFormats.{f.name} must be a non-negative int, not {v!r}")
        if self.act_frac < 6:
            raise ValueError("act_frac must be >= 6 (sigmoid table step is 2**-6)")
        if not 6 <= self.act_frac_min <= self.act_frac_max or not 0 <= self.state_bits - self.act_bits <= SIGMOID_FRAC:
            raise ValueError("need 6 <= act_frac_min <= act_frac_max and 0 <= state_bits - act_bits <= 16")
        if self.act_frac_min > self.act_frac_max:
            raise ValueError("act_frac_min > act_frac_max")
        if self.act_bits > 18:
            raise ValueError("act_bits > 18 does not fit the 18x18 multipliers")


def block_float(w, mant_bits: int = WEIGHT_MANT_BITS) -> tuple[np.ndarray, int]:
    """Quantise a float vector to signed mantissas with one shared power-of-two exponent.

    ``W = round_half_away(w * 2**E)`` with ``E`` chosen so that ``max|w| * 2**E`` lies in
    ``[2**(mant_bits-2), 2**(mant_bits-1))``; saturated to ``+-(2**(mant_bits-1) - 1)``.
    ``w ~= W * 2**-E``.

    Returns
    -------
    W : numpy.ndarray
        int64 mantissas.
    E : int
        Exponent (fractional bits).
    """
    w = np.asarray(w, dtype=np.float64)
    mx = float(np.abs(w).max()) if w.size else 0.0
    if mx == 0.0:
        return np.zeros(w.shape, dtype=_I64), 0
    _, e = np.frexp(mx)
    exp = (mant_bits - 1) - int(e)
    lim = (1 << (mant_bits - 1)) - 1
    return np.clip(round_half_away(w * 2.0 ** exp), -lim, lim).astype(_I64), exp


def mant17_of_float(c: float) -> tuple[int, int]:
    """Positive float to a 17-bit mantissa and exponent: ``c ~= mant * 2**exp``, ``2**16 <= mant < 2**17``."""
    if not c > 0:
        raise ValueError(f"need a positive scale, got {c}")
    m, e = np.frexp(float(c))
    mant = int(round_half_away(m * 2.0 ** 17))
    exp = int(e) - 17
    if mant == 1 << 17:
        mant, exp = 1 << 16, exp + 1
    return mant, exp


def block_normalize(z) -> tuple[np.ndarray, np.ndarray]:
    """Per-row block normalisation ``z' = round_shift(z, s)``, ``s = bit_length(max|z|) - 16``.

    Returns ``(z', s)``; ``|z'| <= 2**16`` and ``max|z'| >= 2**15`` for non-zero rows.
    """
    z = np.asarray(z, dtype=_I64)
    s = bit_length(np.abs(z).max(axis=-1)) - Z_NORM_BITS
    return round_shift(z, s[..., None]), s


def rsqrt_sum_squares(ss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``1/sqrt(ss) ~= q * 2**-(23 + k/2)`` for sums of squares ``0 < ss < 2**53``.

    ``k = bit_length(ss) - 16`` rounded up to even, ``ms = ss >> k`` (truncating; a left shift
    when ``k < 0``) in ``[2**14, 2**16)``, ``q = rsqrt_norm(ms)``.

    Returns
    -------
    q, k, zero : numpy.ndarray
        ``zero`` marks ``ss == 0`` (``q`` is then meaningless; the output is forced to 0).
    """
    ss = np.asarray(ss, dtype=_I64)
    k = bit_length(ss) - 16
    k = k + (k % 2)
    zero = ss == 0
    ms = np.where(k >= 0, ss >> np.maximum(k, 0), ss << np.maximum(-k, 0))
    ms = np.where(zero, 1 << 14, ms)
    return rsqrt_norm(ms), k, zero


def int8_codes(zp, wc) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-token absmax int8 codes of ``u = z' * wc`` (rows of ``zp``), without division.

    ::

        u   = z' * wc                      |u| < 2**33
        m   = max|u| = mn * 2**t  (+ remainder), 2**15 <= mn < 2**16 by truncation
        Rq  = round_shift(127 * recip_norm(mn), 7)          ~ 127 * 2**25 / mn, <= 130048
        x_q = clamp(round_shift(round_shift(u, t) * Rq, 25), -127, 127)

    Returns
    -------
    x_q, mn, t, zero : numpy.ndarray
        Codes (B, K); mantissa and exponent of the maximum (B,); ``zero`` marks ``m == 0``
        (codes are then 0).
    """
    u = np.asarray(zp, dtype=_I64) * wc
    m = np.abs(u).max(axis=-1)
    t = bit_length(m) - Z_NORM_BITS
    zero = m == 0
    mn = np.where(t >= 0, m >> np.maximum(t, 0), m << np.maximum(-t, 0))
    mn = np.where(zero, 1 << 15, mn)
    up = round_shift(u, t[..., None])
    rq = round_shift(127 * recip_norm(mn), 7)
    x_q = np.clip(round_shift(up * rq[..., None], 25), -127, 127)
    return np.where(zero[..., None], 0, x_q), mn, t, zero


def output_scale(mn, t, q, k, c_mant: int, c_exp: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-token output scale ``C * mn * q * 2**(t - 23 - k/2)`` as a 17-bit mantissa and exponent.

    Two pseudo-float multiplies, each normalised with :func:`normalize_mant17`:
    ``P = mn * q`` (16 x 17 bits) then ``S = c_mant * P_mant`` (17 x 17 bits).
    """
    pm, pe = normalize_mant17(np.asarray(mn, dtype=_I64) * q)
    sm, se = normalize_mant17(c_mant * pm)
    return sm, se + pe + c_exp + t - 23 - k // 2


def silu_block(y, frac_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """SiLU of every row of ``y`` (B, K) as a block-normalised vector (mantissas, per-row exponent).

    ::

        y'  = round_shift(y, bit_length(max|y|) - 16)      |y'| <= 2**16 (18-bit signed)
        p   = y' * sigmoid_q16(y, frac_bits)                18 x 17-bit multiply
        out = round_shift(p, 16)                            |out| <= 2**16

    The sigmoid is looked up from the full-precision input; only the multiplicand is
    normalised. ``silu(y / 2**frac_bits) ~= out * 2**-out_frac`` with
    ``out_frac = frac_bits - (bit_length(max|y|) - 16)`` per row. The consumers (o_proj and
    down_proj inputs) are scale-invariant, so the per-row exponent only enters the epsilon term.

    Returns
    -------
    out : numpy.ndarray
        (B, K) int64.
    out_frac : numpy.ndarray
        (B,) int64 fractional bits per row.
    """
    y = np.asarray(y, dtype=_I64)
    sh = bit_length(np.abs(y).max(axis=1)) - Z_NORM_BITS
    yp = round_shift(y, sh[:, None])
    return round_shift(yp * sigmoid_q16(y, frac_bits), SIGMOID_FRAC), frac_bits - sh


def argmax_first(logits) -> np.ndarray:
    """Index of the maximum along the last axis; ties go to the LOWEST index.

    This is what a sequential comparator does that replaces the running maximum only when a
    later value is strictly greater.
    """
    return np.argmax(np.asarray(logits), axis=-1)


# --------------------------------------------------------------------------- constants
@dataclass
class _Group:
    """One RMSNorm input group: a vector z shared by consumers, with its pre-norm weight."""

    name: str
    wp: np.ndarray  # (K,) int64, 18-bit signed
    wp_exp: int
    eps_mant: int = 0  # single-norm groups only: eps K 2**(2 wp_exp - 34) as mant17 * 2**eps_exp
    eps_exp: int = 0


@dataclass
class _Linear:
    """One ternary BitLinear consumer of a group."""

    name: str
    w_t: np.ndarray  # (out, in) int8
    w_f32t: Any  # (in, out) float32 torch tensor for the exact GEMV
    wc: np.ndarray  # (K,) int64, 18-bit signed
    wc_exp: int
    c_mant: int
    c_exp: int
    out_frac: int
    out_bits: int


def _gemv(x_q: np.ndarray, w_f32t) -> np.ndarray:
    """Ternary GEMV ``x_q @ W_t^T`` as int64.

    Computed with float32 products and sums, which is exact: every partial sum is an integer of
    magnitude <= 127 K < 2**24 (checked at load), whatever the summation order. torch is used
    because numpy's threaded BLAS is slow on these small shapes, single-threaded.
    """
    import torch

    threads = torch.get_num_threads()
    if threads != 1:  # these shapes are far too small for threads; on a loaded machine they thrash
        torch.set_num_threads(1)
    try:
        return (torch.from_numpy(x_q.astype(np.float32)) @ w_f32t).numpy().astype(_I64)
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def _softmax0(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=0, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=0, keepdims=True)


class IntRefModel:
    """Integer reference of the accelerator for one checkpoint.

    Parameters
    ----------
    ckpt_or_path : Checkpoint or path-like
        A ternary checkpoint (:func:`models.checkpoint.load_checkpoint`).
    formats : IntFormats, optional
        Datapath formats (default :class:`IntFormats()`).

    Notes
    -----
    Usage: ``m = IntRefModel(path); m.reset(batch); logits = m.step(tokens)``. Logits are int64
    in Q(logit_bits - logit_frac - 1).(logit_frac); :meth:`to_float` converts them, or any
    traced vector, back to float.
    """

    def __init__(self, ckpt_or_path, formats: IntFormats | None = None, calibration=CALIBRATION_TEXT,
                 act_fracs: dict[str, int] | None = None):
        from .checkpoint import Checkpoint, load_checkpoint

        ckpt = ckpt_or_path if isinstance(ckpt_or_path, Checkpoint) else load_checkpoint(ckpt_or_path)
        if not ckpt.config.quantize:
            raise ValueError("IntRefModel needs a ternary checkpoint (config.quantize = True)")
        self.config = ckpt.config
        self.formats = formats or IntFormats()
        self._sats = None
        self._ymax = None
        self._build(ckpt.tensors)
        self.calibration_max: dict[str, float] = {}
        if act_fracs is not None:
            for lin in self._a_linears():
                lin.out_frac = int(act_fracs[lin.name])
        elif calibration is not None:
            self._calibrate(calibration)
        self.reset(1)

    def act_fracs(self) -> dict[str, int]:
        """Fractional bits of every A-format BitLinear output (pass to ``act_fracs=`` to skip calibration)."""
        return {lin.name: lin.out_frac for lin in self._a_linears()}

    def _a_linears(self) -> list[_Linear]:
        return [lay[k] for lay in self.layers for k in ("i", "f", "g", "gu")]

    def _calibrate(self, tokens) -> None:
        """Choose each A-format BitLinear's fractional bits from the largest output on ``tokens``."""
        fm = self.formats
        tokens = np.frombuffer(tokens, dtype=np.uint8) if isinstance(tokens, (bytes, bytearray)) else tokens
        tokens = [int(x) for x in tokens]
        if not tokens:
            raise ValueError("empty calibration sequence")
        lins = self._a_linears()
        for lin in lins:
            lin.out_frac = fm.act_frac
        # CALIBRATION_CHUNKS independent sequences (state from zero) run as one batch
        n = max(1, len(tokens) // CALIBRATION_CHUNKS)
        chunks = np.array(tokens[: n * CALIBRATION_CHUNKS] if len(tokens) >= CALIBRATION_CHUNKS else tokens)
        chunks = chunks.reshape(-1, n)
        self.reset(chunks.shape[0])
        self._ymax = {}
        for col in chunks.T:
            self.step(col)
        ymax, self._ymax = self._ymax, None
        for lin in lins:
            mx = ymax.get(lin.name, 0.0)
            self.calibration_max[lin.name] = mx
            e = int(np.frexp(mx)[1]) if mx > 0 else -64
            lin.out_frac = int(np.clip(fm.act_bits - 1 - fm.act_headroom_bits - e, fm.act_frac_min, fm.act_frac_max))

    # ------------------------------------------------------------------ host compiler
    def _build(self, t: dict[str, np.ndarray]) -> None:
        cfg, fm = self.config, self.formats
        d, L = cfg.d_model, cfg.n_layers
        f64 = lambda k: np.asarray(t[k], dtype=np.float64)  # noqa: E731

        # Embedding: per-row power-of-two shift into the H format.
        emb = f64("model.embeddings.weight") * 2.0 ** fm.h_frac
        lim = (1 << (fm.emb_bits - 1)) - 1
        shift = np.zeros(emb.shape[0], dtype=_I64)
        mx = np.abs(emb).max(axis=1)
        for r in range(emb.shape[0]):
            while round_half_away(mx[r] / 2.0 ** shift[r]) > lim:
                shift[r] += 1
        self.emb_mant = np.clip(round_half_away(emb / np.exp2(shift)[:, None]), -lim, lim).astype(_I64)
        self.emb_shift = shift

        # Forget-gate lower bounds: om_lb = 1 - lb in Q0.16.
        lb = _softmax0(f64("model.lower_bounds"))
        lb = np.cumsum(lb, axis=0) - lb[0]
        self.om_lb = np.clip(round_half_away((1.0 - lb) * SIGMOID_ONE), 0, SIGMOID_ONE).astype(_I64)

        def group(name, wp, single_norm=False):
            wq, we = block_float(wp)
            g = _Group(name, wq, we)
            if single_norm:  # the only RMSNorm before the codes: keep its epsilon (see docs)
                g.eps_mant, g.eps_exp = mant17_of_float(cfg.eps * len(wp) * 2.0 ** (2 * we - 34))
            return g

        def linear(grp: _Group, wp, name, out_frac, out_bits):
            w_t = np.asarray(t[f"{name}.weight"], dtype=np.int8)
            k = w_t.shape[1]
            if 127 * k >= 1 << 24:
                raise ValueError(f"{name}: K = {k} too large for the exact float32 GEMV")
            wc = wp * f64(f"{name}.norm.weight")
            wcq, wce = block_float(wc)
            beta = float(t[f"{name}.beta"][0])
            cm, ce = mant17_of_float(beta * np.sqrt(k) / 127.0 * 2.0 ** (grp.wp_exp - wce - 17))
            import torch

            w32 = torch.from_numpy(np.ascontiguousarray(w_t.T.astype(np.float32)))
            return _Linear(name, w_t, w32, wcq, wce, cm, ce,
                           out_frac, out_bits)

        A = (fm.act_frac, fm.act_bits)  # out_frac of A outputs is refined by _calibrate
        H = (fm.h_frac, fm.h_bits)
        self.layers = []
        for n in range(L):
            p = f"model.layers.{n}."
            wa = f64(p + "attn_norm.weight")
            g_attn = group(p + "attn_in", wa)
            wg = f64(p + "attn.g_norm.weight")
            g_o = group(p + "attn.o_in", wg)
            wm = f64(p + "mlp_norm.weight")
            g_mlp = group(p + "mlp_in", wm)
            ones = np.ones(cfg.d_ff)
            g_down = group(p + "mlp.down_in", ones, single_norm=True)
            self.layers.append(dict(
                attn_in=g_attn,
                i=linear(g_attn, wa, p + "attn.i_proj", *A),
                f=linear(g_attn, wa, p + "attn.f_proj", *A),
                g=linear(g_attn, wa, p + "attn.g_proj", *A),
                o_in=g_o,
                o=linear(g_o, wg, p + "attn.o_proj", *H),
                mlp_in=g_mlp,
                gu=linear(g_mlp, wm, p + "mlp.gate_proj", *A),
                down_in=g_down,
                down=linear(g_down, ones, p + "mlp.down_proj", *H),
            ))
        wn = f64("model.norm.weight")
        self.final_in = group("model.final_in", wn)
        self.head = linear(self.final_in, wn, "lm_head", fm.logit_frac, fm.logit_bits)

    def constants(self) -> dict[str, Any]:
        """Everything the host compiler loads into the board's memories, as integers.

        Keys and formats (``X`` a BitLinear name such as ``model.layers.0.attn.i_proj``;
        ``G`` a group name ``model.layers.N.{attn_in, attn.o_in, mlp_in, mlp.down_in}`` or
        ``model.final_in``):

        - ``format.*``: the :class:`IntFormats` fields (int).
        - ``emb.mant`` (V, d) int16 signed, ``emb.shift`` (V,) uint: ``h = mant << shift`` in H.
        - ``model.layers.N.om_lb`` (d,): ``1 - lb`` in unsigned Q0.16 (0 .. 65536, 17 bits);
          ``model.layers.N.state_frac``: fractional bits of that layer's state.
        - ``G.wp`` (K,) 18-bit signed, ``G.wp_exp`` int: pre-norm weight ``~= wp * 2**-wp_exp``.
        - ``X.weight`` (out, in) int8 ternary; ``X.wc`` (K,) 18-bit signed, ``X.wc_exp`` int:
          product of the norm weights ``~= wc * 2**-wc_exp``; ``X.scale_mant`` (17-bit unsigned)
          and ``X.scale_exp`` (int): ``C_X = beta sqrt(K)/127 * 2**(wp_exp - wc_exp - 17)``;
          ``X.out_frac``, ``X.out_bits``: output format.
        - ``table.sigmoid`` (1025,), ``table.recip`` (256,), ``table.rsqrt`` (384,).

        Returns
        -------
        dict
            Name to int or numpy integer array.
        """
        c: dict[str, Any] = {f"format.{k}": v for k, v in dataclasses.asdict(self.formats).items()}
        c["emb.mant"] = self.emb_mant.astype(np.int16 if self.formats.emb_bits <= 16 else np.int32)
        c["emb.shift"] = self.emb_shift.copy()
        for n, lay in enumerate(self.layers):
            c[f"model.layers.{n}.om_lb"] = self.om_lb[n].copy()
            c[f"model.layers.{n}.state_frac"] = lay["i"].out_frac + self.formats.state_bits - self.formats.act_bits
        groups = [v for lay in self.layers for v in lay.values() if isinstance(v, _Group)] + [self.final_in]
        lins = [v for lay in self.layers for v in lay.values() if isinstance(v, _Linear)] + [self.head]
        for g in groups:
            c[f"{g.name}.wp"] = g.wp.astype(np.int32)
            c[f"{g.name}.wp_exp"] = g.wp_exp
            if g.eps_mant:
                c[f"{g.name}.eps_mant"] = g.eps_mant
                c[f"{g.name}.eps_exp"] = g.eps_exp
        for x in lins:
            c[f"{x.name}.weight"] = x.w_t.copy()
            c[f"{x.name}.wc"] = x.wc.astype(np.int32)
            c[f"{x.name}.wc_exp"] = x.wc_exp
            c[f"{x.name}.scale_mant"] = x.c_mant
            c[f"{x.name}.scale_exp"] = x.c_exp
            c[f"{x.name}.out_frac"] = x.out_frac
            c[f"{x.name}.out_bits"] = x.out_bits
        c["table.sigmoid"] = sigmoid_table()
        c["table.recip"] = recip_table()
        c["table.rsqrt"] = rsqrt_table()
        return c

    # ------------------------------------------------------------------ state
    def reset(self, batch: int = 1) -> None:
        """Zero the recurrent state (one S-format d-vector per layer) for ``batch`` sequences."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.batch = batch
        self.state = [np.zeros((batch, self.config.d_model), dtype=_I64) for _ in range(self.config.n_layers)]

    # ------------------------------------------------------------------ blocks
    def _sat(self, x, bits, tag):
        y = saturate(x, bits)
        if self._sats is not None:
            self._sats[tag] = self._sats.get(tag, 0) + int(np.count_nonzero(y != x))
        return y

    def _nql(self, z: np.ndarray, grp: _Group, lins: list[_Linear], tr: dict | None, tag: str,
             z_frac: np.ndarray | None = None) -> list[np.ndarray]:
        """Normalise, quantise and apply ternary linears ``lins`` to the group input ``z`` (B, K).

        ``z_frac`` (per token) is only needed by single-norm groups, whose epsilon is kept.
        """
        zero_row = ~np.any(z != 0, axis=1)
        zp, sz = block_normalize(z)
        v = round_shift(zp * grp.wp, 17)
        ss = np.sum(v * v, axis=1)
        if grp.eps_mant:
            # eps in units of ss: eps K 2**(2 (Fz - sz) + 2 Ep - 34); capped at 2**50 (z ~ 0 anyway)
            corr = round_shift(grp.eps_mant, np.maximum(2 * sz - 2 * z_frac - grp.eps_exp, -33))
            ss = ss + np.minimum(corr, 1 << 50)
        q, k, ss_zero = rsqrt_sum_squares(ss)
        outs = []
        for lin in lins:
            x_q, mn, t, m_zero = int8_codes(zp, lin.wc)
            acc = _gemv(x_q, lin.w_f32t)
            sm, se = output_scale(mn, t, q, k, lin.c_mant, lin.c_exp)
            sh = -(se + lin.out_frac)
            # a left shift this large saturates anything non-zero; keep int64 exact
            sh = np.maximum(sh, -24)
            y = round_shift(acc * sm[:, None], sh[:, None])
            if self._ymax is not None:
                mx = float(np.abs(y).max()) * 2.0 ** -lin.out_frac
                self._ymax[lin.name] = max(self._ymax.get(lin.name, 0.0), mx)
            y = self._sat(y, lin.out_bits, f"{lin.name}.out")
            y = np.where((zero_row | ss_zero | m_zero)[:, None], 0, y)
            outs.append(y)
            self._last_acc = acc
            if tr is not None:
                short = lin.name.split(".")[-1]
                tr[f"{tag}.{short}.x_q"] = x_q
                tr[f"{tag}.{short}.acc"] = acc
                tr[f"{tag}.{short}.scale_mant"] = sm
                tr[f"{tag}.{short}.scale_exp"] = se
                tr[f"{tag}.{short}.out_shift"] = sh
        return outs

    # ------------------------------------------------------------------ step
    def step(self, tokens, trace: bool = False):
        """Advance every sequence by one token.

        Parameters
        ----------
        tokens : int or array_like of int
            ``(B,)`` token ids (B = the batch of :meth:`reset`), or a single int when B = 1.
        trace : bool
            Also return a dict of every intermediate integer vector (see Returns).

        Returns
        -------
        logits : numpy.ndarray
            int64 ``(B, V)`` (``(V,)`` if ``tokens`` was an int), format Q.logit_frac.
        trace : dict, only with ``trace=True``
            ``"h"``: list of ``L + 1`` arrays (B, d), the residual after the embedding and after
            each layer (H format); ``"layers"``: list of dicts per layer with ``i, f, g`` (A),
            ``om`` (1 - f', Q0.16 unsigned), ``s`` (state, S), ``silu_s`` (A), ``o`` (H),
            ``h_mid`` (h after the token mixer, H), ``gate, up`` (A), ``silu_gate`` (A),
            ``down`` (H), plus ``<block>.<proj>.x_q / .acc / .scale_mant / .scale_exp`` of every
            BitLinear; ``"logits"``; ``"frac"``: the fractional bits of each name (for
            :meth:`to_float`); ``"saturations"``: count of saturated elements per point.
        """
        scalar = np.ndim(tokens) == 0
        tok = np.atleast_1d(np.asarray(tokens, dtype=_I64))
        if tok.ndim != 1 or tok.shape[0] != self.batch:
            raise ValueError(f"expected {self.batch} tokens (batch of reset()), got shape {tok.shape}")
        if np.any(tok < 0) or np.any(tok >= self.config.vocab_size):
            raise ValueError("token id out of range")
        fm = self.formats
        self._sats = {} if trace else None
        tr_all: dict[str, Any] = {"h": [], "layers": []}

        h = self._sat(self.emb_mant[tok] << self.emb_shift[tok][:, None], fm.h_bits, "emb")
        tr_all["h"].append(h)
        new_state = []
        for n, lay in enumerate(self.layers):
            tr = {} if trace else None
            yi, yf, yg = self._nql(h, lay["attn_in"], [lay["i"], lay["f"], lay["g"]], tr, "attn")
            acc_g = self._last_acc  # o_proj's input is scale-invariant: use g's exact accumulator
            om = round_shift(self.om_lb[n] * (SIGMOID_ONE - sigmoid_q16(yf, lay["f"].out_frac)), 16)
            s_frac = lay["i"].out_frac + fm.state_bits - fm.act_bits
            target = silu_fx(yi, lay["i"].out_frac, s_frac)
            s = self.state[n]
            s = s + round_shift(om * (target - s), 16)  # stays between s and target: no overflow
            new_state.append(s)
            silu_s, silu_s_frac = silu_block(s, s_frac)
            (o,) = self._nql(acc_g * silu_s, lay["o_in"], [lay["o"]], tr, "attn")
            h_mid = self._sat(h + o, fm.h_bits, f"layer{n}.h_mid")
            (gu,) = self._nql(h_mid, lay["mlp_in"], [lay["gu"]], tr, "mlp")
            gate, up = gu[:, : self.config.d_ff], gu[:, self.config.d_ff:]
            silu_gate, silu_gate_frac = silu_block(gate, lay["gu"].out_frac)
            (down,) = self._nql(silu_gate * up, lay["down_in"], [lay["down"]], tr, "mlp",
                                z_frac=silu_gate_frac + lay["gu"].out_frac)
            h = self._sat(h_mid + down, fm.h_bits, f"layer{n}.h")
            tr_all["h"].append(h)
            if trace:
                tr["frac"] = self.frac_bits(n)
                tr.update(i=yi, f=yf, g=yg, om=om, s=s, silu_s=silu_s, silu_s_frac=silu_s_frac, o=o, h_mid=h_mid, gate=gate, up=up,
                          silu_gate=silu_gate, silu_gate_frac=silu_gate_frac, down=down)
                tr_all["layers"].append(tr)
        self.state = new_state
        (logits,) = self._nql(h, self.final_in, [self.head], tr_all if trace else None, "head")
        if not trace:
            return logits[0] if scalar else logits
        tr_all["logits"] = logits
        tr_all["frac"] = self.frac_bits()
        tr_all["saturations"] = self._sats
        self._sats = None
        return (logits[0] if scalar else logits), tr_all

    def frac_bits(self, layer: int | None = None) -> dict[str, int]:
        """Fractional bits of the named vectors of :meth:`step`'s trace.

        ``i, f, g, gate, up`` have per-layer (calibrated) formats and are only present when
        ``layer`` is given.
        """
        fm = self.formats
        hf = fm.h_frac
        out = dict(h=hf, h_mid=hf, o=hf, down=hf, om=SIGMOID_FRAC, logits=fm.logit_frac)
        if layer is not None:
            lay = self.layers[layer]
            out.update(s=lay["i"].out_frac + fm.state_bits - fm.act_bits, i=lay["i"].out_frac, f=lay["f"].out_frac, g=lay["g"].out_frac,
                       gate=lay["gu"].out_frac, up=lay["gu"].out_frac)
        return out

    def to_float(self, x, name: str | int, layer: int | None = None) -> np.ndarray:
        """Convert a traced integer vector to float.

        Parameters
        ----------
        x : array_like of int
        name : str or int
            A trace name (see :meth:`frac_bits`) or a number of fractional bits.
        layer : int, optional
            Layer index, needed for the per-layer formats (``i, f, g, gate, up``).
        """
        frac = name if isinstance(name, (int, np.integer)) else self.frac_bits(layer)[name]
        return to_float(x, frac)

    def logits_float(self, logits) -> np.ndarray:
        """Integer logits to float (``logits * 2**-logit_frac``)."""
        return to_float(logits, self.formats.logit_frac)

    def generate(self, prompt_tokens, n: int) -> list[int]:
        """Greedy generation (batch 1): feed the prompt, then ``n`` tokens by :func:`argmax_first`.

        Resets the state first. Returns the ``n`` generated token ids.
        """
        prompt = [int(x) for x in prompt_tokens]
        if not prompt:
            raise ValueError("prompt must contain at least one token")
        self.reset(1)
        logits = None
        for tok in prompt:
            logits = self.step(tok)
        out = []
        for _ in range(n):
            nxt = int(argmax_first(logits))
            out.append(nxt)
            logits = self.step(nxt)
        return out

    def golden_vectors(self, tokens) -> dict[str, np.ndarray]:
        """Golden input/output vectors for block and whole-design simulation (batch 1).

        Resets the state, runs ``tokens`` and returns flat int64 arrays: ``tokens``;
        ``const/<name>`` for every entry of :meth:`constants` (scalars as 0-d arrays); per step
        ``t``: ``step{t}/h{n}`` (residual after the embedding, n = 0, and after layer n - 1),
        ``step{t}/layer{l}/<name>`` (every vector of the trace, batch axis dropped) and
        ``step{t}/logits``. Suitable for ``safetensors.numpy.save``.
        """
        out: dict[str, np.ndarray] = {"tokens": np.asarray([int(t) for t in tokens], dtype=_I64)}
        for k, v in self.constants().items():
            out[f"const/{k}"] = np.asarray(v, dtype=_I64)
        self.reset(1)
        for t, tok in enumerate(out["tokens"]):
            logits, tr = self.step(np.array([tok]), trace=True)
            for n, h in enumerate(tr["h"]):
                out[f"step{t}/h{n}"] = h[0]
            for n, lay in enumerate(tr["layers"]):
                for k, v in lay.items():
                    if k != "frac":
                        out[f"step{t}/layer{n}/{k}"] = np.asarray(v, dtype=_I64)[0]
            for k, v in tr.items():
                if k.startswith("head."):
                    out[f"step{t}/{k}"] = np.asarray(v, dtype=_I64)[0]
            out[f"step{t}/logits"] = logits[0]
        return {k: np.ascontiguousarray(np.asarray(v, dtype=_I64)) for k, v in out.items()}


def main(argv=None) -> int:
    """``python -m models.intref``: greedy generation, or golden vectors with ``--golden``."""
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m models.intref", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("models/checkpoints/mmfree-tiny.safetensors"))
    p.add_argument("--prompt", default="ROMEO.")
    p.add_argument("-n", type=int, default=80, help="bytes to generate (greedy)")
    p.add_argument("--golden", type=Path, default=None,
                   help="write golden vectors of the prompt (safetensors) instead of generating")
    args = p.parse_args(argv)
    ir = IntRefModel(args.checkpoint)
    prompt = args.prompt.encode("utf-8")
    if args.golden is not None:
        from safetensors.numpy import save_file

        args.golden.parent.mkdir(parents=True, exist_ok=True)
        save_file(ir.golden_vectors(prompt), str(args.golden),
                  metadata={"checkpoint": str(args.checkpoint), "prompt": args.prompt})
        print(f"wrote {args.golden} ({len(prompt)} steps)")
        return 0
    out = ir.generate(prompt, args.n)
    print((prompt + bytes(out)).decode("utf-8", errors="replace"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
