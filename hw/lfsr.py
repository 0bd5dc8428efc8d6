"""Maximal-length Fibonacci LFSR, used as a test-pattern source on the board."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["LFSR", "lfsr_sequence", "LFSR_TAPS"]

# Tap positions (1-based, as in the XAPP052 table) of maximal-length LFSRs.
LFSR_TAPS = {8: (8, 6, 5, 4), 16: (16, 15, 13, 4), 24: (24, 23, 22, 17), 32: (32, 22, 2, 1)}


def _feedback(state: int, taps) -> int:
    bit = 0
    for t in taps:
        bit ^= (state >> (t - 1)) & 1
    return bit


def lfsr_sequence(width: int, seed: int, count: int) -> list[int]:
    """Behavioural model: the first ``count`` states after ``seed`` (the seed itself first)."""
    taps = LFSR_TAPS[width]
    mask = (1 << width) - 1
    state, out = seed, []
    for _ in range(count):
        out.append(state)
        state = ((state << 1) | _feedback(state, taps)) & mask
    return out


class LFSR(wiring.Component):
    """Fibonacci LFSR that advances every cycle while ``en`` is high.

    Parameters
    ----------
    width : int
        State width; one of :data:`LFSR_TAPS`.
    seed : int
        Reset state; must be non-zero (the all-zero state is a fixed point).

    Members
    -------
    en : ``In(1)``
        Advance this cycle.
    value : ``Out(width)``
        Current state.
    """

    def __init__(self, width: int = 16, seed: int = 1):
        if width not in LFSR_TAPS:
            raise ValueError(f"LFSR width must be one of {sorted(LFSR_TAPS)}, not {width!r}")
        if not 0 < seed < (1 << width):
            raise ValueError(f"LFSR seed must be in 1..{(1 << width) - 1}, not {seed!r}")
        self._width, self._seed = width, seed
        super().__init__({"en": wiring.In(1), "value": Out(width, init=seed)})

    @property
    def width(self) -> int:
        return self._width

    @property
    def seed(self) -> int:
        return self._seed

    def elaborate(self, platform):
        m = Module()
        fb = Signal()
        m.d.comb += fb.eq(0)
        bits = [self.value[t - 1] for t in LFSR_TAPS[self._width]]
        acc = bits[0]
        for b in bits[1:]:
            acc = acc ^ b
        m.d.comb += fb.eq(acc)
        with m.If(self.en):
            m.d.sync += self.value.eq((self.value << 1) | fb)
        return m
