import pytest
from amaranth.hdl import Fragment
from amaranth.lib import wiring

from hw.pe.dsp_mac import DspMac, dsp_acc_width
from sim.cocotb_run import CocotbFailure, run_cocotb


def test_signature():
    pe = DspMac(8, rows=2, k_max=64, stages=1)
    assert (pe.lanes, pe.rows, pe.k_max, pe.stages, pe.levels) == (8, 2, 64, 1, 3)
    assert pe.macs_per_cycle == 16 and pe.latency == 3
    assert pe.acc_width == dsp_acc_width(64) == 22  # 128 * 128 * 64 = 2^20 needs 22 signed bits
    assert pe.signature.members["i"].flow == wiring.In
    assert pe.signature.members["o"].flow == wiring.Out
    assert len(pe.i.payload.as_value()) == 8 * 8 + 2 * 8 * 8 + 1
    assert len(pe.o.payload.as_value()) == 2 * 22
    assert pe.signature == DspMac.Signature(8, 2, 64)
    Fragment.get(pe, None)  # elaborates
    for bad in [dict(lanes=0), dict(rows=-1), dict(k_max=4), dict(stages=9), dict(lanes=True)]:
        kw = dict(lanes=8, rows=1, k_max=64)
        kw.update(bad)
        with pytest.raises(ValueError):
            DspMac(**kw)


CFG = dict(lanes=4, rows=2, k_max=32, stages=1)


def test_dsp_mac_cocotb():
    pe = DspMac(CFG["lanes"], CFG["rows"], CFG["k_max"], stages=CFG["stages"])
    assert run_cocotb(pe, toplevel="dsp_mac_4x2", test_module="sim.tb_dsp_mac",
                      params=dict(CFG, acc_width=pe.acc_width)) == 2


def test_wrong_golden_is_caught():
    # The bit-exact comparison is live: a golden model off by one must fail the run.
    pe = DspMac(CFG["lanes"], CFG["rows"], CFG["k_max"], stages=CFG["stages"])
    with pytest.raises(CocotbFailure, match="golden"):
        run_cocotb(pe, toplevel="dsp_mac_4x2", test_module="sim.tb_dsp_mac",
                   params=dict(CFG, acc_width=pe.acc_width, golden_offset=1),
                   testcase="random_lengths_with_gaps_and_backpressure")
