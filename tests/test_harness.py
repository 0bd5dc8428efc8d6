"""StandaloneHarness: port accounting, validation, and a short simulation showing the block's
outputs reach the folded pins (so synthesis cannot remove the block)."""

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hw.pe.adder_tree import TernaryAdderTree
from hw.pe.harness import StandaloneHarness, port_bits


def test_ports_and_overhead():
    pe = TernaryAdderTree(8, 1, k_max=64)
    n_in, n_out = port_bits(pe)
    assert n_in == 8 * 8 + 16 + 1 + 1 + 1       # x, w, last, i.valid, o.ready
    assert n_out == 15 + 1 + 1                   # o.payload, o.valid, i.ready
    h = StandaloneHarness(pe, fold_bits=4)
    assert (h.in_bits, h.out_bits, h.fold_bits) == (n_in, n_out, 4)
    assert h.overhead["ff"] == 16 + n_in + n_out + 5 + 4  # xor levels 17 -> 5 -> 4
    assert h.overhead["lut4"] == 2 + 5 + 4
    Fragment.get(h, None)
    with pytest.raises(TypeError):
        StandaloneHarness(object())
    unused = TernaryAdderTree(8, 1, k_max=64)
    with pytest.raises(ValueError, match="fold_bits"):
        StandaloneHarness(unused, fold_bits=0)
    Fragment.get(unused, None)


def test_outputs_toggle():
    h = StandaloneHarness(TernaryAdderTree(8, 1, k_max=64), fold_bits=2)
    seen = set()

    async def tb(ctx):
        for _ in range(300):
            await ctx.tick()
            seen.add(ctx.get(h.out))

    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert seen == {0, 1, 2, 3}
