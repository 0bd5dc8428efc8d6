# amaranth: UnusedElaboratable=no
import pytest
from amaranth.lib import wiring

from hw.pe.lut_gemm import BENCH_SIZES, LutGemv
from sim.cocotb_run import CocotbFailure, run_cocotb


def test_signature():
    dut = LutGemv(weight_format="tl2", lanes=4, tables=2, rows=16, k_max=5632)
    assert (dut.weight_format, dut.group, dut.lanes, dut.tables, dut.rows) == ("tl2", 3, 4, 2, 16)
    assert dut.entry_width == 10 and dut.table_entries == 14
    assert dut.result_width == 21 and dut.acc_width == 21          # 127 * 5632 needs 21 bits
    assert dut.weights_per_cycle == 24 and dut.macs_per_cycle == 24 * 16 / 16
    assert dut.signature.members["act"].flow == wiring.In
    assert dut.signature.members["result"].flow == wiring.Out
    assert len(dut.weights.payload.as_value()) == 4 * 2 * 5
    assert len(dut.act.payload.as_value()) == 2 * 3 * 8 + 1
    assert dut.signature == LutGemv.Signature("tl2", 3, 4, 2, 5632)
    k4 = LutGemv(weight_format="int4", group=4, lanes=2, tables=3, rows=4, k_max=100)
    assert len(k4.weights.payload.as_value()) == 2 * 3 * 4 * 4 and k4.table_entries == 8
    assert k4.macs_per_cycle == 24 * 4 / 9                         # writer-bound: 8 entries + 1
    assert LutGemv(weight_format="int2", group=4, symmetric=False).table_entries == 16
    with pytest.raises(TypeError):
        LutGemv(16)                      # keyword-only: a bare size is not silently a format
    assert LutGemv(lanes=16).lanes == 16
    for size in BENCH_SIZES:
        d = LutGemv(**size)
        assert d.macs_per_cycle == d.weights_per_cycle


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight_format="int8"), "weight_format"),
    (dict(weight_format="tl2", group=4), "TL2"),
    (dict(weight_format="int2", group=5), "2, 3 or 4"),
    (dict(lanes=0), "lanes"),
    (dict(tables=1.5), "tables"),
    (dict(rows=0), "rows"),
    (dict(k_max=0), "k_max"),
    (dict(weight_format="tl2", symmetric=False), "symmetric"),
])
def test_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LutGemv(**kwargs)


CONFIGS = {
    # name: constructor arguments; rows below entries + 1 exercises the writer-bound schedule.
    "tl2": dict(weight_format="tl2", group=3, lanes=3, tables=2, rows=4, k_max=60),
    "int2g4": dict(weight_format="int2", group=4, lanes=2, tables=2, rows=9, k_max=48),
    "int3g3full": dict(weight_format="int3", group=3, lanes=3, tables=1, rows=2, k_max=36,
                       symmetric=False),
    "int4g2": dict(weight_format="int4", group=2, lanes=2, tables=3, rows=3, k_max=60),
}


def _params(dut):
    return {"weight_format": dut.weight_format, "group": dut.group, "symmetric": dut.symmetric,
            "lanes": dut.lanes, "tables": dut.tables, "rows": dut.rows, "k_max": dut.k_max,
            "result_width": dut.result_width}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_lut_gemm_cocotb(name):
    dut = LutGemv(**CONFIGS[name])
    assert run_cocotb(dut, toplevel=f"lut_gemv_{name}", test_module="sim.tb_lut_gemm",
                      params=_params(dut)) == 3


def test_wrong_expectation_is_caught():
    # The testbench must fail when the unit does not compute what it expects: tell it the
    # weights are 3-bit for a unit built for 4-bit weights, so every beat is packed wrongly.
    dut = LutGemv(**CONFIGS["int4g2"])
    p = _params(dut) | {"weight_format": "int3"}
    with pytest.raises(CocotbFailure, match="random_gemvs"):
        run_cocotb(dut, toplevel="lut_gemv_int4g2", test_module="sim.tb_lut_gemm", params=p,
                   testcase="random_gemvs")
