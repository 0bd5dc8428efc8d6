"""hw.core.ports: the banked memory's restricted-reach requesters and merged exclusive requesters,
in Amaranth's simulator against a plain array."""
import random

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from amaranth.sim import Simulator

from hw.core.ports import READ_LATENCY, BankedMemory, exclusive

DEPTH, BANKS = 64, 8


class _Mem(Elaboratable):
    """Eight banks; request 0 any bank, 1 banks 1 and 5, 2 bank 3 alone; one write requester merged
    from two exclusive ones."""

    REACH = [tuple(range(BANKS)), (1, 5), (3,)]

    def __init__(self):
        self.r = [(Signal(6, name=f"ra{i}"), Signal(name=f"re{i}")) for i in range(3)]
        self.d = [Signal(signed(18), name=f"rd{i}") for i in range(3)]
        self.w = [(Signal(6, name=f"wa{i}"), Signal(signed(18), name=f"wd{i}"), Signal(name=f"we{i}"))
                  for i in range(2)]

    def elaborate(self, platform):
        m = Module()
        mem = BankedMemory(m, "t", signed(18), DEPTH, BANKS)
        outs = mem.read([(a, e, reach) for (a, e), reach in zip(self.r, self.REACH)])
        m.d.comb += [d.eq(o) for d, o in zip(self.d, outs)]
        mem.write([exclusive(m, "w", self.w)])
        return m


def test_reach_and_exclusive_requests_read_and_write_the_right_words():
    dut = _Mem()
    rng = random.Random(5)
    ref = [0] * DEPTH
    log = []

    async def tb(ctx):
        # write every word through the merged requester, alternating its two sources
        for a in range(DEPTH):
            v = rng.randrange(-(1 << 17), 1 << 17)
            ref[a] = v
            wa, wd, we = dut.w[a % 2]
            ctx.set(wa, a)
            ctx.set(wd, v)
            ctx.set(we, 1)
            await ctx.tick()
            ctx.set(we, 0)
        await ctx.tick()
        # reads: each request within its reach, all three in one cycle on different banks
        pending = []
        for t in range(200):
            issued = [None] * 3
            used = set()
            for i, reach in enumerate(_Mem.REACH):
                if rng.random() < 0.7:
                    b = rng.choice([b for b in reach if b not in used] or [None])
                    if b is None:
                        continue
                    used.add(b)
                    a = b + BANKS * rng.randrange(DEPTH // BANKS)
                    ctx.set(dut.r[i][0], a)
                    ctx.set(dut.r[i][1], 1)
                    issued[i] = a
                else:
                    ctx.set(dut.r[i][1], 0)
            pending.append(issued)
            await ctx.tick()
            if len(pending) > READ_LATENCY:
                pending.pop(0)
            if len(pending) == READ_LATENCY:
                for i, a in enumerate(pending[0]):
                    if a is not None:
                        log.append((i, a, ctx.get(dut.d[i])))
        for i in range(3):
            ctx.set(dut.r[i][1], 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(log) > 300
    assert {i for i, _, _ in log} == {0, 1, 2}
    bad = [(i, a, got, ref[a]) for i, a, got in log if got != ref[a]]
    assert not bad, bad[:5]


def test_reach_is_checked():
    m = Module()
    mem = BankedMemory(m, "t", signed(18), DEPTH, BANKS)
    with pytest.raises(ValueError, match="reach"):
        mem.read([(Signal(6), Signal(), (0, 8))])
    mem2 = BankedMemory(m, "u", signed(18), DEPTH, BANKS)
    with pytest.raises(ValueError, match="reach"):
        mem2.read([(Signal(6), Signal(), ())])
