"""Standalone measurement wrapper: any component, a handful of pins, nothing optimised away.

To measure the resources and Fmax of one block on its own, :class:`StandaloneHarness` wraps it so
that:

* every input port of the block is driven from a flip-flop of one long shift chain fed by an
  LFSR (so the inputs are live, uncorrelated to synthesis, and cost flip-flops but no LUTs);
* every output port is registered and the registers are XOR-folded, through a pipelined tree of
  4-input XORs, into ``fold_bits`` registered output pins;
* therefore every path into and out of the block starts and ends at a register next to it, and
  the Fmax that place and route reports is that of the block (or of the harness's own one-LUT
  paths, which are never the slowest).

The harness's own cost is known by construction (:attr:`StandaloneHarness.overhead`), so a report
can state the block's share separately.
"""

from amaranth import Cat, Module, Signal
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from hw.lfsr import LFSR

__all__ = ["StandaloneHarness", "port_bits"]


def port_bits(component: wiring.Component) -> tuple[int, int]:
    """``(input_bits, output_bits)`` of ``component``'s flattened signature."""
    n_in = n_out = 0
    for _path, member, value in component.signature.flatten(component):
        width = len(Value.cast(value))
        if member.flow == wiring.In:
            n_in += width
        else:
            n_out += width
    return n_in, n_out


class StandaloneHarness(wiring.Component):
    """Wrap ``dut`` for standalone synthesis and place and route.

    Parameters
    ----------
    dut : wiring.Component
        The block to measure; its ports must all be plain signals or views (no sub-interfaces
        that carry their own clock domains).
    fold_bits : int
        Output pins of the folded signature.
    seed : int
        LFSR seed (16-bit, non-zero).

    Members
    -------
    out : ``Out(fold_bits)``
        XOR fold of all the block's registered outputs.
    """

    def __init__(self, dut: wiring.Component, fold_bits: int = 4, seed: int = 0xACE1):
        try:
            if not isinstance(dut, wiring.Component):
                raise TypeError(f"the harness wraps a wiring.Component, not {dut!r}")
            if not isinstance(fold_bits, int) or fold_bits < 1:
                raise ValueError(f"fold_bits must be a positive integer, not {fold_bits!r}")
            self._dut, self._fold_bits, self._seed = dut, fold_bits, seed
            self._in_bits, self._out_bits = port_bits(dut)
            if self._out_bits == 0:
                raise ValueError("the block has no outputs; everything would be optimised away")
        except Exception:
            self._MustUse__silence = True  # a failed construction is not an unused elaboratable
            raise
        super().__init__({"out": Out(fold_bits)})

    @property
    def dut(self) -> wiring.Component:
        return self._dut

    @property
    def fold_bits(self) -> int:
        return self._fold_bits

    @property
    def in_bits(self) -> int:
        """Input bits of the block (one shift-chain flip-flop each)."""
        return self._in_bits

    @property
    def out_bits(self) -> int:
        """Output bits of the block (one capture flip-flop each)."""
        return self._out_bits

    def _xor_levels(self) -> list[int]:
        widths, n = [], self._out_bits
        while n > self._fold_bits:
            n = max(self._fold_bits, -(-n // 4))
            widths.append(n)
        return widths

    @property
    def overhead(self) -> dict:
        """Flip-flops and LUT4s the harness itself adds (by construction, not measured).

        LFSR: 16 flip-flops and about 2 LUT4 of feedback; chain: ``in_bits`` flip-flops;
        capture: ``out_bits`` flip-flops; fold: one LUT4 and one flip-flop per XOR output.
        """
        xor = sum(self._xor_levels())
        return {"ff": 16 + self._in_bits + self._out_bits + xor,
                "lut4": 2 + xor}

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        m.submodules.lfsr = lfsr = LFSR(16, self._seed)
        m.d.comb += lfsr.en.eq(1)

        # Input side: one shift chain through every input bit of the block.
        chain = Signal(max(1, self._in_bits))
        m.d.sync += chain.eq(Cat(lfsr.value[15] ^ lfsr.value[7], chain[:-1]))
        pos = 0
        outs = []
        for _path, member, value in dut.signature.flatten(dut):
            value = Value.cast(value)
            if member.flow == wiring.In:
                m.d.comb += value.eq(chain[pos:pos + len(value)])
                pos += len(value)
            else:
                outs.append(value)

        # Output side: capture, then fold four bits per LUT4 per pipelined level.
        cap = Signal(self._out_bits)
        m.d.sync += cap.eq(Cat(*outs))
        level = cap
        for width in self._xor_levels():
            nxt = Signal(width)
            bits = []
            for k in range(width):
                group = [level[i] for i in range(k, len(level), width)]
                acc = group[0]
                for b in group[1:]:
                    acc = acc ^ b
                bits.append(acc)
            m.d.sync += nxt.eq(Cat(*bits))
            level = nxt
        m.d.comb += self.out.eq(level)
        return m
