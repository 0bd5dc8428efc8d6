"""Board smoke-test top: PLL, an LFSR pattern generator and its result on the LEDs.

This is what ``build.py --design demo`` builds: a real design exercising the PLL, the clock
constraint and the pins, small enough to place and route in under a minute.
"""

from amaranth import Module, Signal
from amaranth.lib import io, wiring

from .lfsr import LFSR
from .pll import ECP5PLL

__all__ = ["DemoTop"]


class DemoTop(wiring.Component):
    """LFSR -> LEDs at the system clock.

    Parameters
    ----------
    sys_clk_hz : int
        Frequency the PLL makes from the board's 25 MHz oscillator.
    """

    def __init__(self, sys_clk_hz: int = 75_000_000, clk_in_hz: int = 25_000_000):
        self._sys_clk_hz, self._clk_in_hz = sys_clk_hz, clk_in_hz
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.submodules.pll = pll = ECP5PLL(self._clk_in_hz, self._sys_clk_hz)
        m.d.comb += pll.clk_in.eq(clk_buf.i)
        m.submodules.lfsr = lfsr = LFSR(32, seed=0xC0FFEE)
        # Advance the pattern at a visible rate: one step every 2^22 cycles.
        div = Signal(22)
        m.d.sync += div.eq(div + 1)
        m.d.comb += lfsr.en.eq(div == 0)
        leds = [platform.request("led", i, dir="-") for i in range(8)]
        for i, led in enumerate(leds):
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(lfsr.value[i])
        return m
