import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw.pe.adder_tree import (TernaryAdderTree, Trits5Decoder, Trits5RomDecoder, acc_width,
                              row_weight_bits)
from sw.packing import TRITS5_VALID_BYTES, unpack_trits5
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
    assert len(t5.i.payload.w[0]) == 16 and t5.latency == t5.stages + 4  # 2 decoder regs + decode reg
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
    with pytest.raises(ValueError, match="stages"):
        Trits5Decoder(5, stages=3)
    assert "en" not in Trits5Decoder.Signature(5).members
    assert "en" in Trits5Decoder.Signature(5, stages=1).members
    rom = TernaryAdderTree(7, rows=2, k_max=56, weight_format="trits5", decoder="rom", stages=0)
    assert rom.decoder == "rom" and rom.latency == 3
    Fragment.get(rom, None)
    with pytest.raises(ValueError, match="decoder"):
        TernaryAdderTree(7, rows=1, k_max=56, weight_format="trits5", decoder="table")


def _codes_to_weights(codes, count):
    return [((codes >> (2 * n)) & 3) - 1 for n in range(count)]


def test_trits5_decoders_exhaustive():
    # Both gateware decoders against sw.packing's unpacker, for all 243 valid bytes, five bytes
    # (25 weights) at a time in Amaranth's simulator.
    valid = sorted(TRITS5_VALID_BYTES)
    batches = [valid[i:i + 5] for i in range(0, len(valid), 5)]
    rom = Trits5RomDecoder(25)
    assert rom.tables == 3
    for dut, latency in ((Trits5Decoder(25), 0), (Trits5Decoder(25, stages=1), 1),
                         (Trits5Decoder(25, stages=2), 2), (rom, 1)):
        got = []

        async def tb(ctx, dut=dut, latency=latency):
            for batch in batches:
                ctx.set(dut.packed, int.from_bytes(bytes(batch), "little"))
                await ctx.delay(1e-9)
                for _ in range(latency):
                    await ctx.tick()
                got.append(ctx.get(dut.codes))

        sim = Simulator(dut)
        if latency:
            sim.add_clock(1e-8)
        sim.add_testbench(tb)
        sim.run()
        assert len(got) == len(batches) == 49
        for batch, codes in zip(batches, got):
            expect = unpack_trits5(np.array(batch, np.uint8), 5 * len(batch))
            assert _codes_to_weights(codes, 5 * len(batch)) == list(expect), (dut, batch)


CONFIGS = [
    # 2-bit weights, two rows, one register inside a 3-level tree, K_max a power of two so the
    # accumulator bound is tight (128 * 64 = 8192 needs all 15 bits).
    dict(lanes=8, rows=2, k_max=64, fmt="2bit", stages=1),
    # 5-trits-per-byte weights through the adder-chain decoder split by two registers, lanes not
    # a multiple of 5, fully pipelined tree.
    dict(lanes=7, rows=2, k_max=56, fmt="trits5", stages=3, decoder_stages=2),
    # The same through the block-RAM table decoder, no tree registers.
    dict(lanes=7, rows=2, k_max=56, fmt="trits5", stages=0, decoder="rom"),
]


def _make(cfg):
    return TernaryAdderTree(cfg["lanes"], cfg["rows"], cfg["k_max"], cfg["fmt"],
                            stages=cfg["stages"], decoder=cfg.get("decoder", "logic"),
                            decoder_stages=cfg.get("decoder_stages", 1))


def _name(cfg):
    return f"adder_tree_{cfg['fmt']}_{cfg.get('decoder', '')}_{cfg['lanes']}x{cfg['rows']}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_adder_tree_cocotb(cfg):
    pe = _make(cfg)
    params = dict(cfg, acc_width=pe.acc_width, latency=pe.latency)
    name = _name(cfg)
    assert run_cocotb(pe, toplevel=name, test_module="sim.tb_adder_tree", params=params) == 3


def test_wrong_format_is_caught():
    # Feeding 2-bit packed weights to a trits5 PE must fail the bit-exact check.
    cfg = CONFIGS[1]
    pe = _make(cfg)
    params = dict(cfg, fmt="2bit", acc_width=pe.acc_width, latency=pe.latency)
    with pytest.raises(CocotbFailure, match="random_lengths"):
        run_cocotb(pe, toplevel=_name(cfg), test_module="sim.tb_adder_tree",
                   params=params, testcase="random_lengths_with_gaps_and_backpressure")
