"""GEMV engine: a ternary PE array fed from block RAM, one weight word per cycle.

The engine holds the packed ternary weights of every matrix in one weight memory and the int8
input vector in a double-buffered activation memory. A command names a matrix (its first word
and its shape in row groups and chunks, see :mod:`sw.gemv_layout`) and an activation bank; the
engine then streams ``groups * chunks`` beats into a :class:`hw.pe.adder_tree.TernaryAdderTree`
(one per cycle when nothing stalls) and emits one beat of ``rows`` dot products per row group.
While it runs on one bank, the other bank can be written with the next vector.
"""

from types import SimpleNamespace

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from boards.fit import column_width

from .pe.adder_tree import TernaryAdderTree, WEIGHT_FORMATS, acc_width, row_weight_bits

__all__ = ["GemvEngine"]


def _write_port_sig(addr_width: int, data_width: int, en_width: int = 1) -> wiring.Signature:
    return wiring.Signature({"addr": Out(addr_width), "data": Out(data_width), "en": Out(en_width)})


class GemvEngine(wiring.Component):
    """Ternary matrix-vector engine over block-RAM weights.

    Parameters
    ----------
    lanes : int
        Inputs per beat (activations read per cycle).
    rows : int
        Outputs computed in parallel.
    weight_depth : int
        Weight words (each ``rows * row_bits`` wide) in the weight memory.
    k_max : int
        Longest input vector; the activation memory holds two banks of ``k_max / lanes`` words.
    weight_format : str
        Packing of the weight words, ``"2bit"`` or ``"trits5"``.
    stages : int or None
        Pipeline registers inside the adder tree (see :class:`TernaryAdderTree`).
    fifo_depth : int
        Output FIFO depth in row groups; the array runs ahead of a stalled consumer by this much.

    Members
    -------
    cmd : ``In(stream.Signature(StructLayout({"base", "groups", "chunks", "bank"})))``
        Run one matrix: ``base`` first weight word, ``groups`` row groups, ``chunks`` chunks per
        group (both >= 1), ``bank`` activation bank to read.
    o : ``Out(stream.Signature(ArrayLayout(signed(acc_width), rows)))``
        One beat per row group, rows ``g * rows ..`` of the product.
    w_wr : ``In(addr, data, en)``
        Weight memory write port.
    w_rd : ``In(addr, data)``
        Weight memory read-back (upload verification): ``data`` is the word at the ``addr`` of
        two cycles earlier (the address is registered), valid while the engine is idle (``busy``
        low and no ``cmd`` offered in those cycles).
    a_wr : ``In(addr, data, en[lanes])``
        Activation memory write port with a byte enable per lane; address = ``bank * chunks_max +
        chunk``.
    busy : ``Out(1)``
        A command is running (beats still being issued).
    """

    def __init__(self, lanes: int = 16, rows: int = 4, weight_depth: int = 1024, k_max: int = 1024,
                 weight_format: str = "2bit", stages: int | None = None, fifo_depth: int = 8):
        for name, v in (("lanes", lanes), ("rows", rows), ("weight_depth", weight_depth), ("k_max", k_max)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, not {weight_format!r}")
        if k_max % lanes:
            raise ValueError(f"k_max ({k_max}) must be a multiple of lanes ({lanes})")
        self._lanes, self._rows, self._depth, self._k_max = lanes, rows, weight_depth, k_max
        if not isinstance(fifo_depth, int) or fifo_depth < 2:
            raise ValueError(f"fifo_depth must be an integer >= 2, not {fifo_depth!r}")
        self._fmt, self._stages, self._fifo_depth = weight_format, stages, fifo_depth
        self._chunks_max = k_max // lanes
        self._pe = TernaryAdderTree(lanes, rows, k_max=k_max, weight_format=weight_format, stages=stages)
        # The array is elaborated with the engine; an engine that is never elaborated is reported
        # (unused elaboratable) for itself, not once more for its array.
        self._pe._MustUse__silence = True
        self._row_bits = row_weight_bits(lanes, weight_format)
        waw = max(1, (weight_depth - 1).bit_length())
        aaw = max(1, (2 * self._chunks_max - 1).bit_length())
        cmd_layout = data.StructLayout({
            "base": unsigned(waw),
            "groups": unsigned(max(1, weight_depth.bit_length())),
            "chunks": unsigned(self._chunks_max.bit_length()),
            "bank": unsigned(1),
        })
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout)),
            "o": Out(stream.Signature(data.ArrayLayout(signed(acc_width(k_max)), rows))),
            "w_wr": In(_write_port_sig(waw, rows * self._row_bits)),
            "w_rd": In(wiring.Signature({"addr": Out(waw), "data": In(rows * self._row_bits)})),
            "a_wr": In(_write_port_sig(aaw, 8 * lanes, lanes)),
            "busy": Out(1),
        })

    lanes = property(lambda self: self._lanes, doc="Inputs per beat.")
    rows = property(lambda self: self._rows, doc="Outputs in parallel.")
    weight_depth = property(lambda self: self._depth, doc="Words in the weight memory.")
    k_max = property(lambda self: self._k_max, doc="Longest input vector.")
    weight_format = property(lambda self: self._fmt, doc="Weight packing.")
    chunks_max = property(lambda self: self._chunks_max, doc="Activation words per bank.")

    @property
    def latency(self) -> int:
        """Cycles beyond ``groups * chunks`` from a command being offered to its last result beat
        being presented, with no stalls: command accept, block-RAM read, operand register, the
        adder tree's own latency, and the output FIFO."""
        return self._pe.latency + 5

    @property
    def word_bits(self) -> int:
        """Width of one weight word."""
        return self._rows * self._row_bits

    @property
    def weight_columns(self) -> list[int]:
        """Widths of the weight memory's columns, each ``weight_depth`` deep and at most one block
        RAM (``boards.fit.column_width``; one column when the depth exceeds a block RAM)."""
        w = column_width(self._depth) or self.word_bits
        n, r = divmod(self.word_bits, w)
        return [w] * n + ([r] if r else [])

    @property
    def weight_bits(self) -> int:
        """Total weight memory in bits."""
        return self._depth * self.word_bits

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self._lanes, self._rows
        m.submodules.pe = pe = self._pe
        # The weight memory as columns one block RAM deep (``weight_columns``): each block RAM's
        # data pins are bits of the word, so no output multiplexer selects between block RAMs by
        # address (a 2:1 one over the whole 448-bit word, and its select reaching every bit, for a
        # 4096-deep memory in 2048 x 9 blocks).
        w_rd = SimpleNamespace(addr=Signal(range(self._depth)), data=Signal(self.word_bits))
        w_wp = SimpleNamespace(addr=Signal(range(self._depth)), data=Signal(self.word_bits), en=Signal())
        lo = 0
        for i, width in enumerate(self.weight_columns):
            col = memory.Memory(shape=unsigned(width), depth=self._depth, init=[])
            m.submodules[f"wmem{i}"] = col
            rp, wp = col.read_port(), col.write_port()
            m.d.comb += [rp.addr.eq(w_rd.addr), w_rd.data[lo:lo + width].eq(rp.data),
                         wp.addr.eq(w_wp.addr), wp.data.eq(w_wp.data[lo:lo + width]), wp.en.eq(w_wp.en)]
            lo += width
        m.submodules.amem = amem = memory.Memory(shape=unsigned(8 * lanes), depth=2 * self._chunks_max,
                                                 init=[])
        a_rd = amem.read_port()
        a_wp = amem.write_port(granularity=8)
        m.d.comb += [w_wp.addr.eq(self.w_wr.addr), w_wp.data.eq(self.w_wr.data), w_wp.en.eq(self.w_wr.en),
                     a_wp.addr.eq(self.a_wr.addr), a_wp.data.eq(self.a_wr.data), a_wp.en.eq(self.a_wr.en)]

        # The PE array never stalls: its output goes into a FIFO, and a row group is only
        # started when the FIFO has room for its result (credits). With `pe.o.ready` constant,
        # synthesis removes the array's pipeline enables, so no stall signal fans out to
        # thousands of registers. Stages: issue (counters) -> block-RAM read -> register -> PE.
        depth = self._fifo_depth
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=len(pe.o.payload.as_value()), depth=depth)
        inflight = Signal(range(depth + 1))  # groups issued whose result is not in the FIFO yet
        running = Signal()
        waddr = Signal.like(w_rd.addr)
        chunk = Signal.like(self.cmd.payload.chunks)
        group = Signal.like(self.cmd.payload.groups)
        chunks = Signal.like(self.cmd.payload.chunks)
        groups = Signal.like(self.cmd.payload.groups)
        bank = Signal()
        issue = Signal()
        s1_valid, s1_last = Signal(), Signal()
        s2_valid, s2_last = Signal(), Signal()
        s2_x = Signal.like(a_rd.data, reset_less=True)  # operands: no reset (read only with valid)
        s2_w = Signal.like(w_rd.data, reset_less=True)

        last_chunk = chunk == chunks - 1
        room = (fifo.level + inflight) < depth
        m.d.comb += [issue.eq(running & ((chunk != 0) | room)),
                     self.busy.eq(running), self.cmd.ready.eq(~running),
                     w_rd.addr.eq(waddr), self.w_rd.data.eq(w_rd.data),
                     a_rd.addr.eq(bank * self._chunks_max + chunk)]
        m.d.sync += [s1_valid.eq(issue), s1_last.eq(last_chunk),
                     s2_valid.eq(s1_valid), s2_last.eq(s1_last), s2_x.eq(a_rd.data), s2_w.eq(w_rd.data)]
        with m.If(issue):
            m.d.sync += waddr.eq(waddr + 1)
            with m.If(last_chunk):
                m.d.sync += [chunk.eq(0), group.eq(group + 1)]
                with m.If(group == groups - 1):
                    m.d.sync += running.eq(0)
            with m.Else():
                m.d.sync += chunk.eq(chunk + 1)
        with m.If(self.cmd.valid & ~running):
            p = self.cmd.payload
            m.d.sync += [running.eq((p.groups != 0) & (p.chunks != 0)), waddr.eq(p.base),
                         chunk.eq(0), group.eq(0), chunks.eq(p.chunks), groups.eq(p.groups),
                         bank.eq(p.bank)]
        # While idle, the weight memory's address register follows the read-back address, so
        # the block RAMs' address pins see one register and no multiplexer.
        with m.If(~running & ~self.cmd.valid):
            m.d.sync += waddr.eq(self.w_rd.addr)
        started = issue & last_chunk
        with m.If(started & ~pe.o.valid):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~started & pe.o.valid):
            m.d.sync += inflight.eq(inflight - 1)

        m.d.comb += [pe.i.valid.eq(s2_valid), pe.i.payload.last.eq(s2_last),
                     pe.i.payload.x.as_value().eq(s2_x), pe.i.payload.w.as_value().eq(s2_w),
                     pe.o.ready.eq(1),
                     fifo.w_en.eq(pe.o.valid), fifo.w_data.eq(pe.o.payload.as_value()),
                     self.o.valid.eq(fifo.r_rdy), self.o.payload.as_value().eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready)]
        return m
