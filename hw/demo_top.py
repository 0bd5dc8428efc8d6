"""Board smoke-test top: PLL, a ternary PE fed by LFSRs, its result folded onto the LEDs.

This is what ``build.py --design demo`` builds until the accelerator SoC lands: a real datapath
(a :class:`hw.pe.adder_tree.TernaryAdderTree` at the system clock, with every input from an LFSR so
nothing is optimised away) plus the PLL, the clock constraint and the pins.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import io, wiring

from .lfsr import LFSR
from .pe.adder_tree import TernaryAdderTree, row_weight_bits
from .pll import ECP5PLL

__all__ = ["DemoTop"]


class DemoTop(wiring.Component):
    """LFSR -> TernaryAdderTree -> XOR fold -> LEDs.

    Parameters
    ----------
    sys_clk_hz, clk_in_hz : int
        PLL output and board oscillator.
    lanes, rows : int
        Shape of the PE.
    """

    def __init__(self, sys_clk_hz: int = 75_000_000, clk_in_hz: int = 25_000_000,
                 lanes: int = 64, rows: int = 1):
        self._sys_clk_hz, self._clk_in_hz = sys_clk_hz, clk_in_hz
        self._pe = TernaryAdderTree(lanes, rows, k_max=4096)
        super().__init__({})

    @property
    def pe(self) -> TernaryAdderTree:
        return self._pe

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.submodules.pll = pll = ECP5PLL(self._clk_in_hz, self._sys_clk_hz)
        m.d.comb += pll.clk_in.eq(clk_buf.i)

        pe = m.submodules.pe = self._pe
        in_bits = len(pe.i.payload.as_value()) - 1  # all but `last`
        # Enough 32-bit LFSRs (distinct seeds) to cover every input bit, registered.
        lfsrs = []
        for n in range(-(-in_bits // 32)):
            lfsr = LFSR(32, seed=0x1234567 + 0x9E3779B * n & 0xFFFFFFFF or 1)
            m.submodules[f"lfsr{n}"] = lfsr
            m.d.comb += lfsr.en.eq(1)
            lfsrs.append(lfsr.value)
        pattern = Signal(in_bits)
        m.d.sync += pattern.eq(Cat(*lfsrs)[:in_bits])
        count = Signal(6)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [pe.i.valid.eq(1), pe.i.payload.as_value()[:in_bits].eq(pattern),
                     pe.i.payload.last.eq(count == 0), pe.o.ready.eq(1)]

        # Fold every output bit into 8 LED bits (registered), so the whole tree is kept.
        out = pe.o.payload.as_value()
        fold = Signal(8)
        acc = out[0:8]
        for k in range(8, len(out), 8):
            acc = acc ^ out[k:k + 8]
        with m.If(pe.o.valid):
            m.d.sync += fold.eq(fold ^ acc)
        for i in range(8):
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += buf.o.eq(fold[i])
        return m
