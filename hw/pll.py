"""ECP5 PLL (EHXPLLL) with its divisors computed at elaboration."""

from amaranth import ClockDomain, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ECP5PLL", "pll_divisors"]

_VCO_MIN, _VCO_MAX = 400e6, 800e6
_PFD_MIN = 3.125e6


def pll_divisors(f_in: float, f_out: float) -> tuple[int, int, int]:
    """Return (CLKI_DIV, CLKFB_DIV, CLKOP_DIV) that make exactly ``f_out`` from ``f_in``.

    The feedback is taken from CLKOP, so f_out = f_in * CLKFB_DIV / CLKI_DIV and the VCO runs at
    f_out * CLKOP_DIV, which must lie in 400-800 MHz.

    Raises
    ------
    ValueError
        If no divisor set gives ``f_out`` exactly.
    """
    for clki in range(1, 129):
        if f_in / clki < _PFD_MIN:
            break
        for clkfb in range(1, 81):
            if abs(f_in * clkfb / clki - f_out) > 1e-3:
                continue
            # Of the output dividers that keep the VCO in range, take the one nearest 600 MHz
            # (the middle of the range, as ecppll does).
            ops = [op for op in range(1, 129) if _VCO_MIN <= f_out * op <= _VCO_MAX]
            if ops:
                return clki, clkfb, min(ops, key=lambda op: abs(f_out * op - 600e6))
    raise ValueError(f"no ECP5 PLL setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz exactly")


class ECP5PLL(wiring.Component):
    """Clock generator: the ``sync`` domain at ``f_out`` from the board clock ``clk_in``.

    ``sync`` is held in reset until the PLL locks.

    Members
    -------
    clk_in : ``In(1)``
        Board oscillator.
    locked : ``Out(1)``
        PLL lock.
    """

    def __init__(self, f_in: float, f_out: float):
        self._divs = pll_divisors(f_in, f_out)
        self._f_in, self._f_out = f_in, f_out
        super().__init__({"clk_in": In(1), "locked": Out(1)})

    @property
    def f_out(self) -> float:
        return self._f_out

    def elaborate(self, platform):
        m = Module()
        clki, clkfb, clkop = self._divs
        clk = Signal()
        m.domains.sync = ClockDomain("sync")
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(self._f_in / 1e6),
            a_FREQUENCY_PIN_CLKOP=str(self._f_out / 1e6),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=clki, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=clkop,
            p_CLKOP_CPHASE=(clkop - 1) // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=clkfb,
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, o_CLKOP=clk, i_CLKFB=clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=self.locked,
        )
        # Reset the system domain until the PLL locks, released synchronously.
        locked_sync = Signal(2)
        m.d.comb += ClockSignal("sync").eq(clk)
        if platform is not None:
            platform.add_clock_constraint(clk, self._f_out)
        m.domains.por = ClockDomain("por", reset_less=True)
        m.d.comb += ClockSignal("por").eq(clk)
        m.d.por += locked_sync.eq((locked_sync << 1) | self.locked)
        m.d.comb += ResetSignal("sync").eq(~locked_sync[1])
        return m
