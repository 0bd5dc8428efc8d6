"""UART (8N1) receiver and transmitter with valid/ready byte streams.

The bit period is ``divisor = round(clk_freq / baud)`` clock cycles, fixed at elaboration; the
rate error this rounding causes is checked against :data:`MAX_BAUD_ERROR` (2 %), the margin a
centre-sampling receiver needs to leave for the other end's clock error. The default is the
ULX3S link: 3 Mbaud from a 75 MHz clock, divisor 25, exact.

The receiver samples each bit once, at its centre: a falling edge on the (2-flop synchronised)
line starts a byte, the start bit is checked again half a bit later (a shorter low pulse is a
glitch and ignored), then the 8 data bits and the stop bit are sampled one bit period apart. A low
stop bit is a framing error: the byte is dropped, ``framing_error`` pulses and the receiver waits
for the line to go high again (a break) before hunting for the next start bit. A UART cannot be
stalled, so a byte that completes while the previous one is still unaccepted is dropped and
``overrun`` pulses; put a FIFO behind the receiver.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_BAUD_ERROR", "MIN_DIVISOR", "uart_divisor", "UARTRx", "UARTTx", "UART"]

MAX_BAUD_ERROR = 0.02
MIN_DIVISOR = 4


def uart_divisor(clk_freq: int, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq``.

    Raises
    ------
    ValueError
        If the rounded divisor misses ``baud`` by more than :data:`MAX_BAUD_ERROR`, or is below
        :data:`MIN_DIVISOR` (centre sampling needs a few cycles per bit).
    """
    if not isinstance(clk_freq, int) or clk_freq <= 0:
        raise ValueError(f"clk_freq must be a positive integer (Hz), not {clk_freq!r}")
    if not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{clk_freq} Hz gives {clk_freq / baud:.2f} cycles per bit at {baud} baud; "
                         f"at least {MIN_DIVISOR} are needed")
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"{baud} baud from {clk_freq} Hz: divisor {divisor} gives "
                         f"{clk_freq / divisor:.0f} baud, {error:.1%} off (max {MAX_BAUD_ERROR:.0%})")
    return divisor


class _UARTBase(wiring.Component):
    def __init__(self, members, clk_freq, baud):
        self._divisor = uart_divisor(clk_freq, baud)
        self._clk_freq, self._baud = clk_freq, baud
        super().__init__(members)

    @property
    def clk_freq(self) -> int:
        return self._clk_freq

    @property
    def baud(self) -> int:
        return self._baud

    @property
    def divisor(self) -> int:
        """Clock cycles per bit."""
        return self._divisor


class UARTRx(_UARTBase):
    """8N1 receiver, centre sampling.

    Parameters
    ----------
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        Bit rate; checked by :func:`uart_divisor`.

    Members
    -------
    rx : ``In(1)``
        The serial line (asynchronous; synchronised inside). Idle high.
    stream : ``Out(stream.Signature(8))``
        Received bytes.
    framing_error : ``Out(1)``
        One-cycle pulse: a byte had a low stop bit and was dropped.
    overrun : ``Out(1)``
        One-cycle pulse: a byte was dropped because ``stream`` still held the previous one.
    busy : ``Out(1)``
        A byte is being received.
    """

    def __init__(self, *, clk_freq: int = 75_000_000, baud: int = 3_000_000):
        super().__init__({"rx": In(1, init=1), "stream": Out(stream.Signature(8)),
                          "framing_error": Out(1), "overrun": Out(1), "busy": Out(1)},
                         clk_freq, baud)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1, stages=2)

        timer = Signal(range(div))
        bits = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.stream.ready):
            m.d.sync += self.stream.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"  # glitch shorter than half a bit
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], line)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.stream.valid & ~self.stream.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.stream.payload.eq(shreg), self.stream.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                m.d.comb += self.busy.eq(1)
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(_UARTBase):
    """8N1 transmitter; back-to-back bytes leave with no idle time between stop and start bit.

    Parameters
    ----------
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        Bit rate; checked by :func:`uart_divisor`.

    Members
    -------
    stream : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1)``
        The serial line, idle high.
    busy : ``Out(1)``
        A byte is being sent.
    """

    def __init__(self, *, clk_freq: int = 75_000_000, baud: int = 3_000_000):
        super().__init__({"stream": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)},
                         clk_freq, baud)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        shreg = Signal(10, init=0x3FF)
        count = Signal(range(11))

        m.d.comb += self.tx.eq(shreg[0])
        # The next byte is taken on the last cycle of the stop bit (or any cycle when idle), so
        # back-to-back bytes are exactly 10 bit periods apart.
        last = (count == 1) & (timer == 0)
        m.d.comb += [self.stream.ready.eq((count == 0) | last), self.busy.eq(count != 0)]
        with m.If(self.stream.valid & self.stream.ready):
            m.d.sync += [shreg.eq(self.stream.payload << 1 | (1 << 9)), count.eq(10),
                         timer.eq(div - 1)]
        with m.Elif(count != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [timer.eq(div - 1), shreg.eq(shreg >> 1 | (1 << 9)), count.eq(count - 1)]
        return m


class UART(wiring.Component):
    """Receiver and transmitter on one pair of pins.

    Parameters
    ----------
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        Bit rate; checked by :func:`uart_divisor`.

    Members
    -------
    rx : ``In(1)``
        Serial input (asynchronous).
    tx : ``Out(1)``
        Serial output.
    rx_stream : ``Out(stream.Signature(8))``
        Received bytes.
    tx_stream : ``In(stream.Signature(8))``
        Bytes to send.
    framing_error, overrun : ``Out(1)``
        Receiver error pulses (see :class:`UARTRx`).
    rx_busy, tx_busy : ``Out(1)``
        A byte is being received / sent.
    """

    def __init__(self, *, clk_freq: int = 75_000_000, baud: int = 3_000_000):
        self._divisor = uart_divisor(clk_freq, baud)
        self._clk_freq, self._baud = clk_freq, baud
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          "rx_stream": Out(stream.Signature(8)), "tx_stream": In(stream.Signature(8)),
                          "framing_error": Out(1), "overrun": Out(1),
                          "rx_busy": Out(1), "tx_busy": Out(1)})

    @property
    def clk_freq(self) -> int:
        return self._clk_freq

    @property
    def baud(self) -> int:
        return self._baud

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(clk_freq=self._clk_freq, baud=self._baud)
        m.submodules.tx = tx = UARTTx(clk_freq=self._clk_freq, baud=self._baud)
        wiring.connect(m, wiring.flipped(self.rx_stream), rx.stream)
        wiring.connect(m, tx.stream, wiring.flipped(self.tx_stream))
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx),
                     self.framing_error.eq(rx.framing_error), self.overrun.eq(rx.overrun),
                     self.rx_busy.eq(rx.busy), self.tx_busy.eq(tx.busy)]
        return m
