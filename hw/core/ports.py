"""Interfaces between the blocks of the accelerator core (initiator's view).

* :class:`MemReadSignature` -- a synchronous block-RAM read port: ``addr`` and ``en`` in cycle
  ``t``, ``data`` valid in cycle ``t + 1`` (the memory's read register; ``data`` holds while
  ``en`` is low).
* :class:`MemWriteSignature` -- a block-RAM write port: ``addr``, ``data`` and ``en`` in the same
  cycle; ``en`` may be one bit per byte lane.
* :data:`UNIT_CMD_LAYOUT` -- what the sequencer hands a unit with an instruction: the 128-bit
  word (``sw.isa`` encoding) and the values of its three scalar sources, read from the register
  file at issue.
* :class:`UnitResultSignature` -- the registers an instruction writes when it finishes: a
  one-cycle ``done`` pulse with ``rd_we``/``rd_data`` and ``rc_we``/``rc_data`` (the register
  numbers are the instruction's ``rd`` and ``rc`` fields).
"""

from amaranth import signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import INSTR_BITS, REG_BITS

__all__ = ["MemReadSignature", "MemWriteSignature", "UNIT_CMD_LAYOUT", "UnitResultSignature", "READ_LATENCY",
           "pipelined_read"]


class MemReadSignature(wiring.Signature):
    def __init__(self, addr_width: int, data_shape):
        self._args = (addr_width, data_shape)
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(data_shape)})

    def __eq__(self, other):
        return isinstance(other, MemReadSignature) and other._args == self._args

    def __repr__(self):
        return f"MemReadSignature{self._args!r}"


class MemWriteSignature(wiring.Signature):
    def __init__(self, addr_width: int, data_shape, en_width: int = 1):
        self._args = (addr_width, data_shape, en_width)
        super().__init__({"addr": Out(addr_width), "data": Out(data_shape), "en": Out(en_width)})

    def __eq__(self, other):
        return isinstance(other, MemWriteSignature) and other._args == self._args

    def __repr__(self):
        return f"MemWriteSignature{self._args!r}"


UNIT_CMD_LAYOUT = data.StructLayout({
    "instr": unsigned(INSTR_BITS),
    "ra": signed(REG_BITS),     # value of R[instr.ra] at issue (0 for r0)
    "rb": signed(REG_BITS),
    "rc": signed(REG_BITS),
})


class UnitResultSignature(wiring.Signature):
    def __init__(self):
        super().__init__({"done": Out(1), "rd_we": Out(1), "rd_data": Out(signed(REG_BITS)),
                          "rc_we": Out(1), "rc_data": Out(signed(REG_BITS))})

    def __eq__(self, other):
        return isinstance(other, UnitResultSignature)

    def __repr__(self):
        return "UnitResultSignature()"


#: Cycles from a read request on a core memory port to its data (``hw.core.core``: the address
#: and enable are registered in front of the block RAM and its data is registered behind it, so
#: neither the requesters' address logic nor the RAM's output multiplexer shares a cycle with
#: anything else).
READ_LATENCY = 3


def pipelined_read(m, port, name: str):
    """Put registers in front of and behind the memory read ``port`` (``amaranth.lib.memory``).

    Returns ``(addr, en, data)``: drive ``addr`` and ``en`` in cycle ``t``; ``data`` holds the word
    in cycle ``t + READ_LATENCY`` and keeps it until the next enabled read arrives.
    """
    from amaranth import Signal
    addr = Signal.like(port.addr, name=f"{name}_addr")
    en = Signal(name=f"{name}_en")
    data = Signal.like(port.data, name=f"{name}_data")
    m.d.sync += [port.addr.eq(addr), port.en.eq(en), data.eq(port.data)]
    return addr, en, data
