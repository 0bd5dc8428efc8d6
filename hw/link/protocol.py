"""Frame parser, command dispatcher and reply builder of the host link.

:class:`LinkProtocol` sits between the UART byte streams and the rest of the SoC. It talks to the
SoC through two small interfaces, so the accelerator core plugs in later without touching the
link:

* :class:`MemPortSignature` -- byte-wide access to the named memories (WRITE, READ, CRC). The
  protocol is the initiator; requests (``we`` or ``re``) are accepted in a cycle where ``ready``
  is high; each accepted read returns one ``rdata`` byte with ``rvalid`` later (in order; the
  protocol keeps at most one read in flight). ``mem`` selects the memory by id; the protocol has
  already checked the id and that the whole range lies inside that memory's size.
* :class:`CorePortSignature` -- LOAD, RUN and RESET. The protocol pulses ``start`` for one cycle
  with ``op`` (a :class:`sw.protocol.Command` value) and ``arg``; the core answers by pulsing
  ``done`` with ``result`` (0 = done, else a :class:`sw.protocol.ErrorCode` sent to the host).
  ``busy`` and ``cycles`` are reported by STATUS. The link waits for ``done`` without a
  timeout, so a core must answer every command in bounded time; a long operation (RUN of many
  steps) should answer when it has started and report progress through ``busy``/``cycles``.

Frame format, command payloads and error codes are defined once in :mod:`sw.protocol` (and
described in ``docs/protocol.md``). Rules the gateware follows so that it never hangs:

* Bytes outside a frame are skipped until a sync byte.
* A frame whose LEN exceeds the maximum, or whose CRC does not match, is answered only after the
  line has been quiet for ``timeout_cycles`` (the rest of the bad frame is discarded meanwhile),
  so the reply never interleaves with bytes the host is still sending and the parser restarts
  on a clean line.
* A frame that stops mid-way (no byte for ``timeout_cycles``) is answered with TIMEOUT.
* A correct frame with a wrong LEN for its command, an unknown memory, a range outside the memory
  or an unknown type is answered at once with the matching error code; nothing is written.
* WRITE data are held in a frame buffer and copied into the memory only after the CRC matched.
* A RUN that repeats the SEQ and argument of the RUN executed just before it (no other frame in
  between) is a retransmission after a lost reply: it is answered OK and not started again. Every
  other command is idempotent, so the host may resend any frame whose reply it did not get.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw import protocol as P

from .crc import CRC32

__all__ = ["MemPortSignature", "CorePortSignature", "LinkProtocol", "NullCore", "link_manifest"]


class MemPortSignature(wiring.Signature):
    """Byte-wide memory access port, initiator's view (see the module docstring).

    Parameters
    ----------
    addr_width : int
        Address bits (at least 1, at most 32).

    Members
    -------
    mem : ``Out(8)``   memory id
    addr : ``Out(addr_width)``
    we : ``Out(1)``    write ``wdata`` to ``addr``
    wdata : ``Out(8)``
    re : ``Out(1)``    read ``addr``
    ready : ``In(1)``  the request is accepted this cycle
    rdata : ``In(8)``
    rvalid : ``In(1)`` ``rdata`` holds the byte of the oldest accepted read
    """

    def __init__(self, addr_width: int = 32):
        if not isinstance(addr_width, int) or not 1 <= addr_width <= 32:
            raise ValueError(f"addr_width must be an integer in 1..32, not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({"mem": Out(8), "addr": Out(addr_width), "we": Out(1), "wdata": Out(8),
                          "re": Out(1), "ready": In(1), "rdata": In(8), "rvalid": In(1)})

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, MemPortSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"MemPortSignature({self._addr_width})"


class CorePortSignature(wiring.Signature):
    """Command port to the accelerator core, initiator's view (see the module docstring).

    Members
    -------
    start : ``Out(1)``   one-cycle pulse: run ``op`` with ``arg``
    op : ``Out(8)``      ``Command.LOAD``, ``Command.RUN`` or ``Command.RESET``
    arg : ``Out(32)``
    done : ``In(1)``     one-cycle pulse: ``op`` finished with ``result``
    result : ``In(8)``   0 = success, else an error code for the host
    busy : ``In(1)``
    cycles : ``In(32)``  core cycles spent running since the last RESET
    """

    def __init__(self):
        super().__init__({"start": Out(1), "op": Out(8), "arg": Out(32), "done": In(1),
                          "result": In(8), "busy": In(1), "cycles": In(32)})

    def __eq__(self, other):
        return isinstance(other, CorePortSignature)

    def __repr__(self):
        return "CorePortSignature()"


class NullCore(wiring.Component):
    """The core of a link-only bitstream: RESET succeeds, LOAD and RUN answer UNSUPPORTED.

    Members
    -------
    port : ``In(CorePortSignature())``
    """

    def __init__(self):
        super().__init__({"port": In(CorePortSignature())})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.port.done.eq(self.port.start)
        with m.If(self.port.start):
            # RESET is the only operation this core has; LOAD and RUN need an accelerator.
            m.d.sync += self.port.result.eq(
                Mux(self.port.op == P.Command.RESET, 0, P.ErrorCode.UNSUPPORTED))
        return m


def link_manifest(*, mem_sizes, max_data: int, clk_freq: int, baud: int, build_id: int = 0,
                  pe_kind: int = P.PEKind.NONE, lanes: int = 0) -> P.Manifest:
    """Check the link parameters and return the manifest a :class:`LinkProtocol` with them sends.

    Raises
    ------
    ValueError
        On a parameter the gateware cannot implement.
    """
    mem_sizes = tuple(mem_sizes)
    if not 1 <= len(mem_sizes) <= 16:
        raise ValueError(f"between 1 and 16 memories, not {len(mem_sizes)}")
    for s in mem_sizes:
        if not isinstance(s, int) or not 1 <= s <= 1 << 31:
            raise ValueError(f"memory sizes must be integers in 1..2**31, not {s!r}")
    if not isinstance(max_data, int) or not 1 <= max_data <= 32768:
        raise ValueError(f"max_data must be an integer in 1..32768, not {max_data!r}")
    if not isinstance(build_id, int) or not 0 <= build_id < 1 << 32:
        raise ValueError(f"build_id must fit 32 bits, not {build_id!r}")
    if not isinstance(lanes, int) or not 0 <= lanes < 1 << 16:
        raise ValueError(f"lanes must fit 16 bits, not {lanes!r}")
    return P.Manifest(P.MANIFEST_MAGIC, P.PROTOCOL_VERSION, int(P.PEKind(pe_kind)), lanes,
                      build_id, clk_freq, baud, max_data, mem_sizes)


class LinkProtocol(wiring.Component):
    """Parses request frames from ``rx``, executes them and sends reply frames on ``tx``.

    Parameters
    ----------
    mem_sizes : tuple of int
        Size in bytes of each memory reachable through ``mem`` (memory id = index).
    max_data : int
        Largest WRITE data / READ count per frame; the frame buffer holds this many bytes.
    timeout_cycles : int
        Inter-byte timeout inside a frame, and the quiet time that ends a discarded frame.
    clk_freq, baud : int
        Reported in the manifest.
    build_id : int
        32-bit identifier of the bitstream, reported in the manifest.
    pe_kind, lanes : int
        Accelerator description reported in the manifest (0, 0 for a link-only bitstream).

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Received bytes.
    tx : ``Out(stream.Signature(8))``
        Bytes to send.
    mem : ``Out(MemPortSignature(32))``
    core : ``Out(CorePortSignature())``
    uart_error : ``In(1)``
        Pulse counted in STATUS (framing errors, overruns).
    busy : ``Out(1)``
        A frame is being received, executed or answered.
    """

    def __init__(self, *, mem_sizes=(4096,), max_data: int = P.DEFAULT_MAX_DATA,
                 timeout_cycles: int = 750_000, clk_freq: int = 75_000_000, baud: int = 3_000_000,
                 build_id: int = 0, pe_kind: int = P.PEKind.NONE, lanes: int = 0):
        self._manifest = link_manifest(mem_sizes=mem_sizes, max_data=max_data, clk_freq=clk_freq,
                                       baud=baud, build_id=build_id, pe_kind=pe_kind, lanes=lanes)
        if not isinstance(timeout_cycles, int) or timeout_cycles < 16:
            raise ValueError(f"timeout_cycles must be an integer >= 16, not {timeout_cycles!r}")
        self._mem_sizes = self._manifest.mem_sizes
        self._max_data = max_data
        self._timeout = timeout_cycles
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "mem": Out(MemPortSignature(32)), "core": Out(CorePortSignature()),
                          "uart_error": In(1), "busy": Out(1)})

    @property
    def mem_sizes(self) -> tuple:
        return self._mem_sizes

    @property
    def max_data(self) -> int:
        return self._max_data

    @property
    def timeout_cycles(self) -> int:
        return self._timeout

    @property
    def manifest(self) -> P.Manifest:
        """The manifest this block answers HELLO with."""
        return self._manifest

    @property
    def max_payload(self) -> int:
        return P.max_payload(self._max_data)

    def elaborate(self, platform):
        m = Module()
        C = P.Command
        E = P.ErrorCode

        # --- state ------------------------------------------------------------------------------
        manifest = self._manifest.pack()
        rbuf_bytes = max(len(manifest), P.Status.SIZE, 4, 2)
        rbuf = Signal(8 * rbuf_bytes, reset_less=True)   # payload of a short reply, sent LSB first (set before it)
        rtype = Signal(8)
        rlen = Signal(16)
        # What R_HDR loads into rbuf in its first cycle: the states that decide a reply set only
        # this small code (and ``rcode``), so rbuf's 8 * rbuf_bytes enables and data inputs hang
        # on two state bits, not on the whole next-state logic of the command dispatcher.
        R_ERROR, R_MANIFEST, R_STATUS, R_CRC = range(4)
        rsel = Signal(2)
        rcode = Signal(8)
        rmem = Signal()                           # reply payload comes from memory reads
        ftype = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        args = Array(Signal(8, name=f"arg{i}") for i in range(9))
        fcs = Signal(32)
        hidx = Signal(3)
        pidx = Signal(16)
        idle = Signal(range(self._timeout + 1))
        err = Signal(8)
        count = Signal(32)                        # bytes left in a copy / memory CRC / READ
        addr = Signal(32)
        mbyte = Signal(8)

        run_dup_ok = Signal()                     # the last frame executed was a RUN that started
        run_seq = Signal(8)
        run_arg = Signal(32)
        cycles = Signal(64)
        frames_ok = Signal(32)
        frames_err = Signal(32)
        uart_errors = Signal(32)
        clear_counters = Signal()
        m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.uart_error):
            m.d.sync += uart_errors.eq(uart_errors + 1)

        m.submodules.rx_crc = rx_crc = CRC32()
        m.submodules.tx_crc = tx_crc = CRC32()
        m.submodules.mem_crc = mem_crc = CRC32()
        m.submodules.buf = buf = Memory(shape=8, depth=self._max_data, init=[])
        buf_wr = buf.write_port()
        buf_rd = buf.read_port(domain="sync")

        # Argument fields (little-endian) of WRITE/READ/CRC/LOAD/RUN.
        a_mem = args[0]
        a_addr = Cat(args[1], args[2], args[3], args[4])
        a_count16 = Cat(args[5], args[6])
        a_count32 = Cat(args[5], args[6], args[7], args[8])
        a_arg = Cat(args[0], args[1], args[2], args[3])
        data_len = Signal(16)
        m.d.comb += data_len.eq(length - P.ARG_BYTES)
        sizes = Array(Const(s, 32) for s in self._mem_sizes)
        mem_size = sizes[a_mem[:4]] if len(self._mem_sizes) > 1 else sizes[0]

        # Argument checks, registered: the arguments are stable from the last payload byte on,
        # and at least the four FCS cycles and CHECK pass before EXEC reads these flags. This
        # keeps the 33-bit adders and comparators out of EXEC's next-state logic.
        mem_ok = Signal()
        write_ok = Signal()
        read_ok = Signal()
        crc_ok = Signal()
        count16_ok = Signal()
        m.d.sync += [mem_ok.eq(a_mem < len(self._mem_sizes)),
                     write_ok.eq((a_addr + data_len) <= mem_size),    # 33-bit sums: no wrap
                     read_ok.eq((a_addr + a_count16) <= mem_size),
                     crc_ok.eq((a_addr + a_count32) <= mem_size),
                     count16_ok.eq(a_count16 <= self._max_data)]

        rx_byte = self.rx.payload
        rx_take = self.rx.valid & self.rx.ready
        m.d.comb += [rx_crc.data.eq(rx_byte), tx_crc.data.eq(self.tx.payload),
                     mem_crc.data.eq(self.mem.rdata)]
        m.d.comb += [self.mem.addr.eq(addr), self.mem.wdata.eq(buf_rd.data), self.mem.mem.eq(a_mem),
                     self.core.op.eq(ftype), self.core.arg.eq(a_arg)]
        m.d.comb += [buf_wr.addr.eq(pidx - P.ARG_BYTES), buf_wr.data.eq(rx_byte),
                     buf_rd.addr.eq(pidx), buf_rd.en.eq(1)]

        def reply_error(code):
            m.d.sync += [rtype.eq(P.ERROR_TYPE), rsel.eq(R_ERROR), rcode.eq(code),
                         rlen.eq(2), rmem.eq(0), hidx.eq(0), frames_err.eq(frames_err + 1)]
            m.next = "R_HDR"

        def reply_ok(source=None, nbytes=0, from_mem=False):
            """``source``: which R_* payload R_HDR loads (None: no payload, or one from memory)."""
            m.d.sync += [rtype.eq(ftype | P.REPLY_FLAG), rlen.eq(nbytes), rmem.eq(from_mem),
                         hidx.eq(0), frames_ok.eq(frames_ok + 1)]
            if source is not None:
                m.d.sync += rsel.eq(source)
            m.next = "R_HDR"

        def timed(next_on_timeout_code):
            # Inter-byte timer for the states that wait for more bytes of a frame.
            with m.If(rx_take):
                m.d.sync += idle.eq(0)
            with m.Elif(idle == self._timeout):
                m.d.sync += idle.eq(0)
                reply_error(next_on_timeout_code)
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        with m.FSM(name="link") as fsm:
            with m.State("HUNT"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.clear.eq(1)]
                m.d.sync += [idle.eq(0), hidx.eq(0), pidx.eq(0), ftype.eq(0), seq.eq(0)]
                with m.If(rx_take & (rx_byte == P.SYNC)):
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.en.eq(rx_take)]
                with m.If(rx_take):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.Switch(hidx):
                        with m.Case(0):
                            m.d.sync += ftype.eq(rx_byte)
                        with m.Case(1):
                            m.d.sync += seq.eq(rx_byte)
                        with m.Case(2):
                            m.d.sync += length[:8].eq(rx_byte)
                        with m.Case(3):
                            m.d.sync += length[8:].eq(rx_byte)
                            full = Cat(length[:8], rx_byte)
                            with m.If(full > self.max_payload):
                                m.d.sync += [err.eq(E.BAD_LENGTH), idle.eq(0)]
                                m.next = "DISCARD"
                            with m.Elif(full == 0):
                                m.d.sync += hidx.eq(0)
                                m.next = "FCS"
                            with m.Else():
                                m.next = "PAYLOAD"
                timed(E.TIMEOUT)

            with m.State("PAYLOAD"):
                m.d.comb += [self.rx.ready.eq(1), rx_crc.en.eq(rx_take)]
                with m.If(rx_take):
                    m.d.sync += pidx.eq(pidx + 1)
                    with m.If(pidx < 9):
                        m.d.sync += args[pidx[:4]].eq(rx_byte)
                    with m.If(pidx >= P.ARG_BYTES):
                        m.d.comb += buf_wr.en.eq(1)
                    with m.If(pidx == length - 1):
                        m.d.sync += hidx.eq(0)
                        m.next = "FCS"
                timed(E.TIMEOUT)

            with m.State("FCS"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(rx_take):
                    m.d.sync += [fcs.eq(Cat(fcs[8:], rx_byte)), hidx.eq(hidx + 1)]
                    with m.If(hidx == 3):
                        m.next = "CHECK"
                timed(E.TIMEOUT)

            with m.State("CHECK"):
                with m.If(fcs == rx_crc.crc):
                    m.next = "EXEC"
                with m.Else():
                    m.d.sync += [err.eq(E.BAD_CRC), idle.eq(0)]
                    m.next = "DISCARD"

            with m.State("DISCARD"):
                # Swallow the rest of a bad frame; answer once the line has been quiet.
                m.d.comb += self.rx.ready.eq(1)
                timed(err)

            with m.State("EXEC"):
                m.d.sync += [pidx.eq(0), addr.eq(a_addr)]
                # A frame other than a RUN ends the window in which a RUN can be a retransmission.
                with m.If(ftype != C.RUN):
                    m.d.sync += run_dup_ok.eq(0)
                with m.Switch(ftype):
                    with m.Case(C.HELLO):
                        with m.If(length != 0):
                            reply_error(E.BAD_LENGTH)
                        with m.Else():
                            reply_ok(R_MANIFEST, len(manifest))
                    with m.Case(C.STATUS):
                        with m.If(length != 0):
                            reply_error(E.BAD_LENGTH)
                        with m.Else():
                            reply_ok(R_STATUS, P.Status.SIZE)
                    with m.Case(C.WRITE):
                        with m.If(length < P.ARG_BYTES):
                            reply_error(E.BAD_LENGTH)
                        with m.Elif(~mem_ok):
                            reply_error(E.BAD_MEMORY)
                        with m.Elif(~write_ok):
                            reply_error(E.BAD_ADDRESS)
                        with m.Elif(data_len == 0):
                            reply_ok()
                        with m.Else():
                            m.d.sync += count.eq(data_len)
                            m.next = "COPY_START"
                    with m.Case(C.READ):
                        with m.If(length != 7):
                            reply_error(E.BAD_LENGTH)
                        with m.Elif(~count16_ok):
                            reply_error(E.BAD_LENGTH)
                        with m.Elif(~mem_ok):
                            reply_error(E.BAD_MEMORY)
                        with m.Elif(~read_ok):
                            reply_error(E.BAD_ADDRESS)
                        with m.Else():
                            m.d.sync += count.eq(a_count16)
                            reply_ok(None, a_count16, from_mem=True)
                    with m.Case(C.CRC):
                        with m.If(length != 9):
                            reply_error(E.BAD_LENGTH)
                        with m.Elif(~mem_ok):
                            reply_error(E.BAD_MEMORY)
                        with m.Elif(~crc_ok):
                            reply_error(E.BAD_ADDRESS)
                        with m.Else():
                            m.d.sync += count.eq(a_count32)
                            m.next = "MEMCRC"
                    with m.Case(C.RESET):
                        with m.If(length != 0):
                            reply_error(E.BAD_LENGTH)
                        with m.Else():
                            m.d.comb += self.core.start.eq(1)
                            m.next = "CORE"
                    with m.Case(C.LOAD, C.RUN):
                        with m.If(length != 4):
                            reply_error(E.BAD_LENGTH)
                        with m.Elif((ftype == C.RUN) & run_dup_ok & (seq == run_seq) & (a_arg == run_arg)):
                            # The host sent this RUN again because it lost the reply: it started
                            # already (RUN is the one command that is not idempotent).
                            reply_ok()
                        with m.Else():
                            m.d.comb += self.core.start.eq(1)
                            m.next = "CORE"
                    with m.Default():
                        reply_error(E.UNKNOWN_COMMAND)

            with m.State("COPY_START"):
                m.next = "COPY"  # the buffer's read port now presents byte 0 (pidx was cleared)
            with m.State("COPY"):
                # One byte per accepted cycle: the buffer read port is addressed one ahead.
                m.d.comb += [self.mem.we.eq(1)]
                with m.If(self.mem.ready):
                    m.d.comb += buf_rd.addr.eq(pidx + 1)
                    m.d.sync += [pidx.eq(pidx + 1), addr.eq(addr + 1), count.eq(count - 1)]
                    with m.If(count == 1):
                        reply_ok()

            with m.State("MEMCRC"):
                m.d.comb += mem_crc.clear.eq(1)
                m.next = "MEMCRC_REQ"
            with m.State("MEMCRC_REQ"):
                with m.If(count == 0):
                    m.next = "MEMCRC_DONE"
                with m.Else():
                    m.d.comb += self.mem.re.eq(1)
                    with m.If(self.mem.ready):
                        m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                        m.next = "MEMCRC_WAIT"
            with m.State("MEMCRC_WAIT"):
                with m.If(self.mem.rvalid):
                    m.d.comb += mem_crc.en.eq(1)
                    m.next = "MEMCRC_REQ"
            with m.State("MEMCRC_DONE"):
                reply_ok(R_CRC, 4)

            with m.State("CORE"):
                with m.If(self.core.done):
                    with m.If(self.core.result == 0):
                        with m.If(ftype == C.RESET):
                            m.d.comb += clear_counters.eq(1)
                        with m.If(ftype == C.RUN):
                            m.d.sync += [run_dup_ok.eq(1), run_seq.eq(seq), run_arg.eq(a_arg)]
                        reply_ok()
                    with m.Else():
                        reply_error(self.core.result)

            # --- reply ----------------------------------------------------------------------
            with m.State("R_HDR"):
                m.d.comb += [self.tx.valid.eq(1), tx_crc.en.eq(self.tx.ready & (hidx != 0))]
                m.d.comb += self.tx.payload.eq(Array([Const(P.SYNC, 8), rtype, seq, rlen[:8], rlen[8:],
                                                      Const(0, 8), Const(0, 8), Const(0, 8)])[hidx])
                with m.If(hidx == 0):
                    m.d.comb += tx_crc.clear.eq(1)
                    with m.Switch(rsel):
                        with m.Case(R_ERROR):
                            m.d.sync += rbuf.eq(Cat(rcode, ftype))
                        with m.Case(R_MANIFEST):
                            m.d.sync += rbuf.eq(Const(int.from_bytes(manifest, "little"), 8 * len(manifest)))
                        with m.Case(R_STATUS):
                            # sampled one cycle after the command was decided: frames_ok already
                            # counts this reply, which the host expects to see only in the next one
                            m.d.sync += rbuf.eq(Cat(cycles, (frames_ok - 1)[:32], frames_err, uart_errors,
                                                    self.core.busy, Const(0, 31), self.core.cycles))
                        with m.Case(R_CRC):
                            m.d.sync += rbuf.eq(mem_crc.crc)
                with m.If(self.tx.ready):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 4):
                        m.d.sync += [hidx.eq(0), pidx.eq(0)]
                        with m.If(rlen == 0):
                            m.next = "R_FCS"
                        with m.Elif(rmem):
                            m.next = "R_MEMREQ"
                        with m.Else():
                            m.next = "R_PAY"
            with m.State("R_PAY"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(rbuf[:8]),
                             tx_crc.en.eq(self.tx.ready)]
                with m.If(self.tx.ready):
                    m.d.sync += [rbuf.eq(rbuf >> 8), pidx.eq(pidx + 1)]
                    with m.If(pidx == rlen - 1):
                        m.next = "R_FCS"
            with m.State("R_MEMREQ"):
                m.d.comb += self.mem.re.eq(1)
                with m.If(self.mem.ready):
                    m.d.sync += addr.eq(addr + 1)
                    m.next = "R_MEMWAIT"
            with m.State("R_MEMWAIT"):
                with m.If(self.mem.rvalid):
                    m.d.sync += mbyte.eq(self.mem.rdata)
                    m.next = "R_MEMSEND"
            with m.State("R_MEMSEND"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(mbyte),
                             tx_crc.en.eq(self.tx.ready)]
                with m.If(self.tx.ready):
                    m.d.sync += pidx.eq(pidx + 1)
                    with m.If(pidx == rlen - 1):
                        m.next = "R_FCS"
                    with m.Else():
                        m.next = "R_MEMREQ"
            with m.State("R_FCS"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc.word_select(hidx[:2], 8))]
                with m.If(self.tx.ready):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 3):
                        m.next = "HUNT"

        m.d.comb += self.busy.eq(~fsm.ongoing("HUNT"))
        with m.If(clear_counters):
            m.d.sync += [cycles.eq(0), frames_ok.eq(0), frames_err.eq(0), uart_errors.eq(0)]
        return m

