"""The link-only SoC: UART, receive FIFO, :class:`~hw.link.protocol.LinkProtocol`, a test memory and
the :class:`~hw.link.protocol.NullCore`.

Without a core (the link-only bitstream): HELLO, WRITE, READ, CRC, STATUS and RESET work against
a block-RAM test memory (memory id 0, :data:`sw.protocol.MemoryId.TEST`); LOAD and RUN are
answered with ``UNSUPPORTED``. With ``core=`` an :class:`hw.core.core.AcceleratorCore` takes the
place of the test memory and the null core behind the same two ports (the accelerator SoC).
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw import protocol as P

from .protocol import LinkProtocol, MemPortSignature, NullCore, link_manifest
from .uart import UART, uart_divisor

__all__ = ["LinkTestMemory", "StreamRegister", "SocLink"]


class LinkTestMemory(wiring.Component):
    """A block RAM of ``size`` bytes behind a :class:`MemPortSignature` port (memory id 0).

    Parameters
    ----------
    size : int
        Bytes.

    Members
    -------
    port : ``In(MemPortSignature(32))``
        Always ready; read data two cycles after ``re`` (the block RAM's output is registered
        once more, so the read-data multiplexer of a large memory is not in the reader's path).
    """

    def __init__(self, size: int):
        if not isinstance(size, int) or not 1 <= size <= 1 << 24:
            raise ValueError(f"test memory size must be an integer in 1..2**24, not {size!r}")
        self._size = size
        super().__init__({"port": In(MemPortSignature(32))})

    @property
    def size(self) -> int:
        return self._size

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=8, depth=self._size, init=[])
        wr = ram.write_port()
        rd = ram.read_port(domain="sync")
        p = self.port
        m.d.comb += [wr.addr.eq(p.addr), wr.data.eq(p.wdata), wr.en.eq(p.we),
                     rd.addr.eq(p.addr), rd.en.eq(p.re), p.ready.eq(1)]
        pending = Signal()
        m.d.sync += [pending.eq(p.re), p.rvalid.eq(pending), p.rdata.eq(rd.data)]
        return m


class StreamRegister(wiring.Component):
    """One register stage in a byte stream, full throughput (ready passes through combinationally).

    Cuts timing paths: behind a block-RAM FIFO, whose data output is slow on the ECP5 (about 6 ns
    clock-to-out without its output register), the consumer's logic starts from a flip-flop.

    Members
    -------
    i : ``In(stream.Signature(8))``
    o : ``Out(stream.Signature(8))``
    """

    def __init__(self):
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        return m


class SocLink(wiring.Component):
    """Host link with a test memory, on a pair of UART pins.

    Parameters
    ----------
    clk_freq : int
        Clock in Hz (75 MHz on the ULX3S; the board model uses 24 MHz, 8 cycles per bit).
    baud : int
        Line rate; ``clk_freq / baud`` must be within 2 % of an integer >= 4.
    mem_size : int
        Test memory bytes.
    max_data : int
        WRITE/READ bytes per frame.
    timeout_cycles : int, optional
        Inter-byte timeout; default 10 ms.
    build_id : int
        Reported in the manifest.
    core : AcceleratorCore, optional
        The accelerator behind the link (its memories replace the test memory; ``mem_size`` is
        then ignored and the manifest reports the core's PE kind, lanes and memory sizes).
    rx_fifo_depth : int
        Bytes buffered between the UART and the parser while a command executes. 512 (one
        DP16KD on the ECP5) holds the next frame's bytes while a 4 KB WRITE is copied and
        answered, so the host can keep two frames in flight.

    Members
    -------
    rx : ``In(1)``
        UART input pin.
    tx : ``Out(1)``
        UART output pin.
    busy : ``Out(1)``
        Something is in flight (a byte on either line, a frame in the parser, bytes in the FIFO).
        Not needed on a board; the board model stops its clock while the link is idle.
    """

    def __init__(self, *, clk_freq: int = 75_000_000, baud: int = 3_000_000, mem_size: int = 65536,
                 max_data: int = P.DEFAULT_MAX_DATA, timeout_cycles: int | None = None,
                 build_id: int = 0, rx_fifo_depth: int = 512, core=None):
        uart_divisor(clk_freq, baud)  # validates
        if timeout_cycles is None:
            timeout_cycles = clk_freq // 100
        if not isinstance(timeout_cycles, int) or timeout_cycles < 16:
            raise ValueError(f"timeout_cycles must be an integer >= 16, not {timeout_cycles!r}")
        if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 2:
            raise ValueError(f"rx_fifo_depth must be an integer >= 2, not {rx_fifo_depth!r}")
        if not isinstance(mem_size, int) or not 1 <= mem_size <= 1 << 24:
            raise ValueError(f"test memory size must be an integer in 1..2**24, not {mem_size!r}")
        self._core = core
        if core is not None:
            self._link_args = dict(mem_sizes=core.mem_sizes, pe_kind=P.PEKind.ADDER_TREE, lanes=core.lanes)
        else:
            self._link_args = dict(mem_sizes=(mem_size,))
        self._manifest = link_manifest(max_data=max_data, clk_freq=clk_freq, baud=baud, build_id=build_id,
                                       **self._link_args)
        self._clk_freq, self._baud = clk_freq, baud
        self._mem_size, self._max_data = mem_size, max_data
        self._timeout, self._build_id = timeout_cycles, build_id
        self._rx_fifo_depth = rx_fifo_depth
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    @property
    def clk_freq(self) -> int:
        return self._clk_freq

    @property
    def baud(self) -> int:
        return self._baud

    @property
    def divisor(self) -> int:
        return uart_divisor(self._clk_freq, self._baud)

    @property
    def core(self):
        """The accelerator core, or None on the link-only SoC."""
        return self._core

    @property
    def manifest(self) -> P.Manifest:
        return self._manifest

    @property
    def timeout_cycles(self) -> int:
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(clk_freq=self._clk_freq, baud=self._baud)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self._rx_fifo_depth)
        m.submodules.protocol = proto = LinkProtocol(
            max_data=self._max_data, timeout_cycles=self._timeout, clk_freq=self._clk_freq, baud=self._baud,
            build_id=self._build_id, **self._link_args)
        if self._core is None:
            m.submodules.memory = memory = LinkTestMemory(self._mem_size)
            m.submodules.core = core = NullCore()
            mem_port, core_busy = memory.port, 0
        else:
            m.submodules.core = core = self._core
            mem_port, core_busy = core.mem, core.busy

        wiring.connect(m, uart.rx_stream, fifo.w_stream)
        m.submodules.rx_reg = rx_reg = StreamRegister()
        wiring.connect(m, fifo.r_stream, rx_reg.i)
        wiring.connect(m, rx_reg.o, proto.rx)
        wiring.connect(m, proto.tx, uart.tx_stream)
        wiring.connect(m, proto.mem, mem_port)
        wiring.connect(m, proto.core, core.port)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                     proto.uart_error.eq(uart.framing_error | uart.overrun),
                     self.busy.eq(proto.busy | core_busy | fifo.r_rdy | rx_reg.o.valid | uart.rx_busy | uart.tx_busy
                                  | uart.rx_stream.valid)]
        return m
