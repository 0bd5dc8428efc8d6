"""cocotb testbench: BitSerialPE against models.bitmod.bitmod_dot_fixed, bit for bit.

Parameters (``sim.tb.params()``): ``lanes``, ``group_size``, ``max_groups`` of the design;
optional ``report`` (a path: the measured cycles per weight are written there as JSON) and
``corrupt`` (add 1 to every expected value, to prove that a wrong answer fails).
"""

import json
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from hw.pe.bitserial import pack_operands, result_width
from models.bitmod import CODE_BITS, TERMS_PER_WEIGHT, DType, bitmod_dot_fixed, decode, grid
from sim.tb import StreamSink, StreamSource, params, reset, to_signed


class Dot:
    """One dot product: per-group datatypes and scales, codes and activations.

    ``beats_last_group`` shortens the final group (the PE ends it at ``last``); the golden model
    sees it padded with zero weights.
    """

    def __init__(self, dtypes, scales, codes, x, beats_last_group=None):
        self.dtypes, self.scales, self.codes, self.x = list(dtypes), list(scales), codes, x
        self.beats_last_group = beats_last_group

    def beats(self, lanes, group_size):
        out = []
        per_group = group_size // lanes
        n_groups = len(self.dtypes)
        for g, (dt, (m, e)) in enumerate(zip(self.dtypes, self.scales)):
            nb = per_group
            if g == n_groups - 1 and self.beats_last_group is not None:
                nb = self.beats_last_group
            for b in range(nb):
                lo = g * group_size + b * lanes
                out.append(pack_operands(lanes, self.codes[lo:lo + lanes], self.x[lo:lo + lanes],
                                         dt, m, e, last=(g == n_groups - 1 and b == nb - 1)))
        return out

    def expected(self, lanes, group_size):
        codes, x = list(self.codes), list(self.x)
        if self.beats_last_group is not None:
            zero = int(_code_of(self.dtypes[-1], 0))
            start = (len(self.dtypes) - 1) * group_size + self.beats_last_group * lanes
            for i in range(start, len(codes)):
                codes[i], x[i] = zero, 0
        return bitmod_dot_fixed(codes, self.dtypes, self.scales, x, group_size)


def _code_of(dtype, value):
    """Lowest code of ``dtype`` that decodes to ``value`` (found through the model's decoder)."""
    dec = decode(list(range(1 << CODE_BITS[dtype])), dtype).tolist()
    return dec.index(value)


def _random_dot(rng, group_size, dtypes, scale=None):
    n = len(dtypes) * group_size
    codes = [rng.randrange(1 << CODE_BITS[dt]) for dt in dtypes for _ in range(group_size)]
    x = [rng.randint(-128, 127) for _ in range(n)]
    scales = [scale or (rng.randrange(1 << 16), rng.randrange(32)) for _ in dtypes]
    return Dot(dtypes, scales, codes, x)


def _uniform_dot(group_size, dtype, code, xval, scale=(1, 0), groups=1):
    n = groups * group_size
    return Dot([dtype] * groups, [scale] * groups, [code] * n, [xval] * n)


async def _run(dut, dots, p_idle, p_stall, seed=0, corrupt=False):
    p = params()
    lanes, gs = p["lanes"], p["group_size"]
    width = result_width(gs, p["max_groups"])
    src = StreamSource(dut, "operands", p_idle=p_idle, rng=random.Random(seed))
    sink = StreamSink(dut, "result", p_stall=p_stall, rng=random.Random(seed + 1))
    beats = [b for d in dots for b in d.beats(lanes, gs)]
    sender = cocotb.start_soon(src.send(beats))
    got = [to_signed(v, width) for v in await sink.recv(len(dots), timeout_cycles=400_000)]
    await sender
    for i, (d, g) in enumerate(zip(dots, got)):
        want = d.expected(lanes, gs) + int(corrupt)
        assert g == want, (f"dot {i} ({[DType(t).name for t in d.dtypes]}, scales {d.scales}): "
                           f"PE {g}, model {want}")


@cocotb.test()
async def random_every_dtype(dut):
    """Random codes, activations and scales for every datatype, mixed groups, gaps and stalls."""
    p = params()
    gs = p["group_size"]
    await reset(dut)
    rng = random.Random(11)
    dots = [_random_dot(rng, gs, [dt, dt]) for dt in DType]
    for _ in range(6):
        dots.append(_random_dot(rng, gs, [rng.choice(list(DType))
                                          for _ in range(rng.randint(1, min(4, p["max_groups"])))]))
    await _run(dut, dots, p_idle=0.3, p_stall=0.3, seed=3, corrupt=p.get("corrupt", False))


@cocotb.test()
async def edge_cases(dut):
    """Extreme codes of every datatype against +127/-127/-128, zero weights, scale extremes."""
    p = params()
    gs, lanes = p["group_size"], p["lanes"]
    await reset(dut)
    rng = random.Random(12)
    dots = []
    for dt in DType:
        g = grid(dt)
        for value in (int(g.min()), int(g.max())):           # e.g. FP4 EA+ 16, INT8 -128 / 127
            for xval in (127, -127, -128):
                dots.append(_uniform_dot(gs, dt, _code_of(dt, value), xval, scale=(65535, 0)))
        zero = _random_dot(rng, gs, [dt])                     # all-zero weights, random x
        zero.codes = [_code_of(dt, 0)] * gs
        dots.append(zero)
    # Scale extremes: m = 0, m = 1 with e = 31 (rounds to 0 or +-1), and e = 1 exact halves.
    dots.append(_random_dot(rng, gs, [DType.INT4, DType.FP4_EA_NEG], scale=(0, 0)))
    dots.append(_random_dot(rng, gs, [DType.INT8, DType.INT8], scale=(1, 31)))
    dots.append(_uniform_dot(gs, DType.INT3, _code_of(DType.INT3, -1), 1, scale=(1, 8)))
    dots.append(_uniform_dot(gs, DType.INT3, _code_of(DType.INT3, 1), -1, scale=(1, 8)))
    dots.append(_uniform_dot(gs, DType.INT3, _code_of(DType.INT3, 1), 1, scale=(3, 9)))
    # Ternary (unscaled) and scaled groups in one dot product.
    dots.append(_random_dot(rng, gs, [DType.TERNARY, DType.FP3_EA_POS, DType.TERNARY][
        :p["max_groups"]]))
    # A last group cut short by `last` (the PE does not wait for a full group).
    if gs // lanes > 1:
        short = _random_dot(rng, gs, [DType.INT4, DType.FP4_ER_NEG][:p["max_groups"]])
        short.beats_last_group = 1
        dots.append(short)
    await _run(dut, dots, p_idle=0.2, p_stall=0.5, seed=5)


@cocotb.test()
async def max_groups_bound(dut):
    """``max_groups`` groups of INT8 -128 x -128 (and x 127) at the largest scale: no overflow."""
    p = params()
    gs, mg = p["group_size"], p["max_groups"]
    await reset(dut)
    code = _code_of(DType.INT8, -128)
    dots = [_uniform_dot(gs, DType.INT8, code, -128, scale=(65535, 0), groups=mg),
            _uniform_dot(gs, DType.INT8, code, 127, scale=(65535, 0), groups=mg)]
    width = result_width(gs, mg)
    # The first result is the bound the result width is sized for: one bit narrower overflows.
    assert dots[0].expected(p["lanes"], gs) >= 1 << (width - 2)
    await _run(dut, dots, p_idle=0.1, p_stall=0.3, seed=7)


@cocotb.test()
async def cycles_per_weight(dut):
    """Measure cycles per weight (per lane) of each datatype with no gaps and no back-pressure."""
    p = params()
    gs, lanes = p["group_size"], p["lanes"]
    groups = 8
    await reset(dut)
    stamps = []

    async def monitor():
        cycle = 0
        while True:
            await ReadOnly()                                   # this cycle's handshake
            if dut.operands__valid.value and dut.operands__ready.value:
                stamps.append(cycle)
            await RisingEdge(dut.clk)
            cycle += 1

    mon = cocotb.start_soon(monitor())
    rng = random.Random(13)
    measured = {}
    for dt in DType:
        stamps.clear()
        # The widest mantissa keeps the serial dequantiser busiest (16 cycles per group).
        dot = _random_dot(rng, gs, [dt] * groups, scale=(65535, 20))
        await _run(dut, [dot], p_idle=0.0, p_stall=0.0, seed=9)
        n = len(stamps)
        assert n == groups * gs // lanes, f"{dt.name}: counted {n} accepted beats"
        measured[dt.name] = (stamps[-1] - stamps[0]) / (n - 1)
    mon.cancel()
    dut._log.info("cycles per weight (per lane): %s", measured)
    if p.get("report"):
        with open(p["report"], "w") as f:
            json.dump({"lanes": lanes, "group_size": gs, "dequant": p.get("dequant"),
                       "cycles_per_weight": measured,
                       "terms_per_weight": {d.name: TERMS_PER_WEIGHT[d] for d in DType}}, f)
