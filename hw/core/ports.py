"""Interfaces between the blocks of the accelerator core (initiator's view).

* :class:`MemReadSignature` -- a synchronous block-RAM read port: ``addr`` and ``en`` in cycle
  ``t``, ``data`` valid in cycle ``t + 1`` (the memory's read register; ``data`` holds while
  ``en`` is low).
* :class:`MemWriteSignature` -- a block-RAM write port: ``addr``, ``data`` and ``en`` in the same
  cycle; ``en`` may be one bit per byte lane.
* :data:`UNIT_CMD_LAYOUT` -- what the sequencer hands a unit with an instruction: the 128-bit
  word (``sw.isa`` encoding) and the values of its three scalar sources, read from the register
  file at issue.
* :class:`BankedMemory` -- a memory of several block-RAM banks by address, one read and one write
  per bank and cycle.
* :class:`UnitResultSignature` -- the registers an instruction writes when it finishes: a
  one-cycle ``done`` pulse with ``rd_we``/``rd_data`` and ``rc_we``/``rc_data`` (the register
  numbers are the instruction's ``rd`` and ``rc`` fields).
"""

import functools
import operator

from amaranth import Cat, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import INSTR_BITS, REG_BITS

__all__ = ["MemReadSignature", "MemWriteSignature", "UNIT_CMD_LAYOUT", "UnitResultSignature", "READ_LATENCY",
           "pipelined_read", "BankedMemory", "exclusive"]


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
    data = Signal.like(port.data, name=f"{name}_data", reset_less=True)
    addr_q = Signal.like(port.addr, name=f"{name}_addr_q", reset_less=True)
    m.d.sync += [addr_q.eq(addr), port.en.eq(en), data.eq(port.data)]
    m.d.comb += port.addr.eq(addr_q)
    return addr, en, data


def exclusive(m, name: str, requests):
    """One request from requesters that never request in the same cycle.

    ``requests`` are tuples ``(*fields, en)`` alike (``(addr, en)`` for reads, ``(addr, data, en)``
    for writes), in priority order; the result is such a tuple: ``en`` is any of theirs, each field
    the first enabled requester's. A memory port then sees one requester where it saw several, so
    its address multiplexer (and a read's data multiplexer) is built once, in front of the banks,
    not once per bank.
    """
    from amaranth import Signal
    width = len(requests[0])
    assert all(len(r) == width for r in requests)
    out = []
    for f in range(width - 1):
        v = requests[-1][f]
        for r in reversed(requests[:-1]):
            v = Mux(r[-1], r[f], v)
        sig = Signal(max(len(r[f]) for r in requests), name=f"{name}_f{f}")
        m.d.comb += sig.eq(v)
        out.append(sig)
    en = Signal(max(len(r[-1]) for r in requests), name=f"{name}_en")
    m.d.comb += en.eq(functools.reduce(operator.or_, [r[-1] for r in requests]))
    return (*out, en)


class BankedMemory:
    """A memory of the core split into ``banks`` banks (a power of two) by the address's low bits,
    with registered ports.

    Requests in one cycle are served at once when they address different banks: this is how the
    vector unit reads several operand streams per cycle, ``x[a + j]`` and ``y[b + j]`` with ``a``
    and ``b`` of different parity (two banks), or four words ``C[a + 2j]``, ``C[a + 2j + 1]``,
    ``C[b + 2j]``, ``C[b + 2j + 1]`` with ``b - a = 2`` modulo 4 (four banks), from block RAMs of one
    read port each (``docs/core.md``). Words of different parity are in different banks whatever
    the number of banks. Each bank has the registered read port of :func:`pipelined_read`
    (``READ_LATENCY``) and a write port with registered address, data and enable; :meth:`write`
    serves up to one request per bank per cycle. Address and data registers have no reset (only
    the enables do): they matter only with their enable.

    :meth:`read` takes requests ``(addr, en)`` or ``(addr, en, reach)`` in priority order: each
    bank serves the first enabled request that addresses it; a lower request to a bank taken in the
    same cycle is not served (the requesters never issue one: the vector unit pairs reads of
    different banks only, the others read one word at a time). ``reach``, a tuple of bank numbers,
    is the requester's promise that it addresses only those banks: the request is wired to those
    banks' address multiplexers alone and its data multiplexer selects among their outputs alone
    (a fixed lane of the vector unit's wide path reaches two banks of eight, so each bank's
    multiplexers see a few requesters, not all). An address outside ``reach`` reads a word of the
    wrong bank; the requester must not issue one. The data of request ``i`` is valid
    ``READ_LATENCY`` cycles after it and holds until that request's bank serves another read.
    """

    def __init__(self, m, name: str, shape, depth: int, banks: int = 2):
        from amaranth.lib import memory
        if banks < 1 or banks & (banks - 1):
            raise ValueError(f"banks must be a power of two, not {banks!r}")
        self._m, self._name = m, name
        self.depth = depth
        self.nbanks = banks
        self._bb = (banks - 1).bit_length()         # address bits that select the bank
        self.banks = []
        self._rd, self._wr = [], []
        for b in range(banks):
            mem = memory.Memory(shape=shape, depth=max(1, (depth + banks - 1 - b) // banks), init=[])
            m.submodules[f"{name}{b}"] = mem
            self.banks.append(mem)
            self._rd.append(pipelined_read(m, mem.read_port(), f"{name}{b}_r"))
            self._wr.append(mem.write_port())
        self._read_done = False

    def _bank(self, a):
        return a[:self._bb] if self._bb else 0

    def read(self, requests):
        """Connect the read requests ``[(addr, en[, reach]), ...]``; return their data values."""
        from amaranth import Array, Signal
        assert not self._read_done, "read() connects all requests at once"
        self._read_done = True
        m, bb = self._m, self._bb
        every = tuple(range(self.nbanks))
        reqs = []
        for r in requests:
            a, e, reach = (*r, every) if len(r) == 2 else r
            reach = tuple(sorted(set(reach)))
            if not reach or not set(reach) <= set(every):
                raise ValueError(f"{self._name}: reach {reach!r} must be banks of 0 .. {self.nbanks - 1}")
            reqs.append((a, e, reach))

        def bits_of(reach):
            """The address bits that tell the banks of ``reach`` apart, and each bank's value of them."""
            bits = [k for k in range(bb) if len({(b >> k) & 1 for b in reach}) > 1]
            return bits, {b: sum(((b >> k) & 1) << n for n, k in enumerate(bits)) for b in reach}

        for b, (addr, en, _data) in enumerate(self._rd):
            first = True
            for a, e, reach in reqs:
                if b not in reach:
                    continue
                bits, key = bits_of(reach)
                cond = e & (Cat(*[a[k] for k in bits]) == key[b]) if bits else e
                with (m.If(cond) if first else m.Elif(cond)):
                    m.d.comb += [addr.eq(a[bb:]), en.eq(1)]
                first = False
        outs = []
        for i, (a, e, reach) in enumerate(reqs):
            d = Signal.like(self._rd[0][2], name=f"{self._name}_q{i}_data")
            outs.append(d)
            bits, key = bits_of(reach)
            if not bits:
                m.d.comb += d.eq(self._rd[reach[0]][2])
                continue
            # the bits that tell the reachable banks apart, delayed with the read
            sel = Signal(len(bits), name=f"{self._name}_q{i}_sel0")
            with m.If(e):
                m.d.sync += sel.eq(Cat(*[a[k] for k in bits]))
            for k in range(1, READ_LATENCY):
                r = Signal.like(sel, name=f"{self._name}_q{i}_sel{k}")
                m.d.sync += r.eq(sel)
                sel = r
            by_key = {v: b for b, v in key.items()}
            if len(by_key) == 1 << len(bits):       # every value names a bank: a balanced multiplexer
                m.d.comb += d.eq(Array(self._rd[by_key[v]][2] for v in range(len(by_key)))[sel])
            else:
                out = self._rd[reach[0]][2]
                for b in reach[1:]:
                    out = Mux(sel == key[b], self._rd[b][2], out)
                m.d.comb += d.eq(out)
        return outs

    def write(self, requests):
        """Connect the write requests ``[(addr, data, en), ...]`` in priority order: each bank takes
        the first enabled request that addresses it (one per bank per cycle, so requests to
        different banks are all served); the write reaches the bank one cycle later."""
        from amaranth import Cat, Signal
        m, bb = self._m, self._bb
        for b, w in enumerate(self._wr):
            sel = [e & (self._bank(a) == b) for a, _, e in requests]
            m.d.sync += w.en.eq(Cat(*sel).any())
            w_addr = Signal.like(w.addr, name=f"{self._name}{b}_w_addr", reset_less=True)
            w_data = Signal.like(w.data, name=f"{self._name}{b}_w_data", reset_less=True)
            m.d.comb += [w.addr.eq(w_addr), w.data.eq(w_data)]
            first = True
            for (a, d, _), c in zip(requests, sel):
                with (m.If(c) if first else m.Elif(c)):
                    m.d.sync += [w_addr.eq(a[bb:]), w_data.eq(d)]
                first = False
