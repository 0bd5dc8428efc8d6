"""ULX3S top for the board link: PLL, the UART pins of the FT231X, :class:`SocLink`, LEDs.

``build.py --design link`` builds it. With it on a board, the host reaches the link exactly as it
reaches the board model: ``python -m sw.client --device /dev/ttyUSB0 hello`` (or ``selftest``).
Without a core (``--design link``) RUN and LOAD answer "not supported by this bitstream"; with
one (``--design soc``) this is the accelerator SoC that ``python -m sw.run`` drives.
"""

import time

from amaranth import Module, Signal
from amaranth.lib import io, wiring

from .link.soc_link import SocLink
from .pll import ECP5PLL

__all__ = ["LinkTop"]


class LinkTop(wiring.Component):
    """PLL + link SoC + status LEDs.

    Parameters
    ----------
    sys_clk_hz, clk_in_hz, baud : int
        System clock made by the PLL from the board oscillator, and the link's line rate.
    mem_size : int
        Bytes of the test memory behind the link.
    build_id : int
        32-bit build identifier reported by HELLO (default: the build time in seconds).
    core : hw.core.core.AcceleratorCore, optional
        The accelerator behind the link (the SoC bitstream); without it, the test memory.

    LEDs: 0 lights while the link is busy with a frame or the core runs, 1 toggles on every received byte edge
    (rx activity), 7 is the PLL lock.
    """

    def __init__(self, sys_clk_hz: int = 75_000_000, clk_in_hz: int = 25_000_000, baud: int = 3_000_000,
                 mem_size: int = 16384, build_id: int | None = None, core=None):
        self._pll_args = (clk_in_hz, sys_clk_hz)
        self.core = core
        self._link = SocLink(clk_freq=sys_clk_hz, baud=baud, mem_size=mem_size, core=core,
                             build_id=int(time.time()) & 0xFFFFFFFF if build_id is None else build_id)
        super().__init__({})

    @property
    def link(self) -> SocLink:
        return self._link

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.submodules.pll = pll = ECP5PLL(*self._pll_args)
        m.d.comb += pll.clk_in.eq(clk_buf.i)
        m.submodules.link = link = self._link

        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx_buf.i), tx_buf.o.eq(link.tx)]

        rx_seen = Signal()
        with m.If(~link.rx):
            m.d.sync += rx_seen.eq(~rx_seen)
        leds = [link.busy, rx_seen] + [0] * 5 + [pll.locked]
        for i, value in enumerate(leds):
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += buf.o.eq(value)
        return m
