import pytest
from amaranth.hdl import Fragment
from amaranth.lib import wiring

from hw.pe.adder_tree import TernaryAdderTree, Trits5Decoder, acc_width, row_weight_bits
from sim.cocotb_run import CocotbFailure, run_cocotb


def test_signature():
    pe = TernaryAdderTree(8, rows=2, k_max=64, weight_format="2bit", stages=1)
    assert (pe.lanes, pe.rows, pe.k_max, pe.weight_format, pe.stages) == (8, 2, 64, "2bit", 1)
    assert pe.levels == 3 and pe.latency == 2 and pe.macs_per_cycle == 16
    assert pe.acc_width == 15  # 128 * 64 = 8192 needs 15 signed bits
    assert pe.signature.members["i"].flow == wiring.In
    assert pe.signature.members["o"].flow == wiring.Out
    assert len(pe.i.payload.x) == 8 and len(pe.i.payload.w) == 2
    assert len(pe.i.payload.w[0]) == 16 and len(pe.i.payload.as_value()) == 8 * 8 + 2 * 16 + 1
    assert len(pe.o.payload.as_value()) == 2 * 15
    assert pe.signature == TernaryAdderTree.Signature(8, 2, 64, "2bit")
    t5 = TernaryAdderTree(7, rows=1, k_max=56, weight_format="trits5")
    assert len(t5.i.payload.w[0]) == 16 and t5.latency == t5.stages + 2
    for dut in (pe, t5):
        Fragment.get(dut, None)  # elaborates
    for bad in [dict(lanes=0), dict(lanes=2.5), dict(rows=0), dict(k_max=4),
                dict(weight_format="tl2"), dict(stages=4), dict(stages=-1)]:
        kw = dict(lanes=8, rows=1, k_max=64, weight_format="2bit")
        kw.update(bad)
        with pytest.raises(ValueError):
            TernaryAdderTree(**kw)


def test_widths():
    assert acc_width(5632) == 21          # SPEC: K = 5632 needs 21 bits signed
    assert acc_width(1) == 9              # +-128
    assert row_weight_bits(64, "2bit") == 128 and row_weight_bits(64, "trits5") == 104
    dec = Trits5Decoder(12)
    assert len(dec.packed) == 24 and len(dec.codes) == 24 and dec.count == 12
    Fragment.get(dec, None)
    with pytest.raises(ValueError, match="count"):
        Trits5Decoder(0)


CONFIGS = [
    # 2-bit weights, two rows, one register inside a 3-level tree, K_max a power of two so the
    # accumulator bound is tight (128 * 64 = 8192 needs all 15 bits).
    dict(lanes=8, rows=2, k_max=64, fmt="2bit", stages=1),
    # 5-trits-per-byte weights through the decoder, lanes not a multiple of 5, fully pipelined.
    dict(lanes=7, rows=2, k_max=56, fmt="trits5", stages=3),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['fmt']}-{c['lanes']}x{c['rows']}")
def test_adder_tree_cocotb(cfg):
    pe = TernaryAdderTree(cfg["lanes"], cfg["rows"], cfg["k_max"], cfg["fmt"], stages=cfg["stages"])
    params = dict(cfg, acc_width=pe.acc_width, latency=pe.latency)
    name = f"adder_tree_{cfg['fmt']}_{cfg['lanes']}x{cfg['rows']}"
    assert run_cocotb(pe, toplevel=name, test_module="sim.tb_adder_tree", params=params) == 3


def test_wrong_format_is_caught():
    # Feeding 2-bit packed weights to a trits5 PE must fail the bit-exact check.
    cfg = CONFIGS[1]
    pe = TernaryAdderTree(cfg["lanes"], cfg["rows"], cfg["k_max"], cfg["fmt"], stages=cfg["stages"])
    params = dict(cfg, fmt="2bit", acc_width=pe.acc_width, latency=pe.latency)
    with pytest.raises(CocotbFailure, match="random_lengths"):
        run_cocotb(pe, toplevel=f"adder_tree_trits5_7x2", test_module="sim.tb_adder_tree",
                   params=params, testcase="random_lengths_with_gaps_and_backpressure")
