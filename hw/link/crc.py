"""Byte-wide CRC-32 (the link protocol's frame and memory checksum) in gateware.

The update is the same function as :func:`sw.protocol.crc32_update`: the XOR network is derived
at elaboration from that Python function (the CRC update is linear over GF(2), so the response to
each single input bit gives the whole network). The protocol is therefore defined once, in
``sw/protocol.py``, and ``tests/test_protocol.py`` checks this block against it.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sw.protocol import crc32_update

__all__ = ["CRC32", "crc32_matrix"]

_INIT = 0xFFFFFFFF
_XOROUT = 0xFFFFFFFF


def crc32_matrix() -> list[tuple[list[int], list[int]]]:
    """For each of the 32 next-state bits: (register bits, data bits) whose XOR gives it."""
    reg_cols = [crc32_update(1 << i, b"\x00") for i in range(32)]
    dat_cols = [crc32_update(0, bytes([1 << j])) for j in range(8)]
    rows = []
    for bit in range(32):
        rows.append(([i for i in range(32) if reg_cols[i] >> bit & 1],
                     [j for j in range(8) if dat_cols[j] >> bit & 1]))
    return rows


class CRC32(wiring.Component):
    """CRC-32/ISO-HDLC, one byte per cycle.

    Members
    -------
    clear : ``In(1)``
        Load the initial value (0xFFFFFFFF) at the next edge; takes priority over ``en``.
    en : ``In(1)``
        Absorb ``data`` at the next edge.
    data : ``In(8)``
        The byte to absorb.
    crc : ``Out(32)``
        The CRC of the bytes absorbed since the last ``clear`` (final XOR applied), valid the
        cycle after the last ``en``.
    """

    def __init__(self):
        super().__init__({"clear": In(1), "en": In(1), "data": In(8), "crc": Out(32)})

    def elaborate(self, platform):
        m = Module()
        reg = Signal(32, init=_INIT)
        nxt = Signal(32)
        for bit, (rbits, dbits) in enumerate(crc32_matrix()):
            terms = [reg[i] for i in rbits] + [self.data[j] for j in dbits]
            acc = terms[0]
            for t in terms[1:]:
                acc = acc ^ t
            m.d.comb += nxt[bit].eq(acc)
        with m.If(self.clear):
            m.d.sync += reg.eq(_INIT)
        with m.Elif(self.en):
            m.d.sync += reg.eq(nxt)
        m.d.comb += self.crc.eq(reg ^ _XOROUT)
        return m
