"""cocotb testbench for :class:`hw.link.uart.UART`, at bit level on the ``rx``/``tx`` pins.

The line is driven with real time (picoseconds), not clock cycles, so the sender's bit period can
differ from the receiver's (baud tolerance) and its edges fall anywhere between clock edges.
Parameters: ``divisor`` (clock cycles per bit).
"""

import random

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

from sim.tb import StreamSink, StreamSource, params, reset

__all__ = ["CLK_PS", "uart_send", "uart_recv", "PulseCounter"]

CLK_PS = 10_000  # sim.tb.reset's default 10 ns clock


async def uart_send(pin, data, bit_ps: int, *, stop_bits=None, rng=None, max_gap_bits: float = 0):
    """Drive ``data`` onto ``pin`` as 8N1 frames with ``bit_ps`` per bit.

    ``stop_bits`` (optional): per byte, the value sent in the stop-bit slot (0 = framing error).
    ``max_gap_bits``: random idle time between bytes, up to this many bit periods.
    """
    for i, byte in enumerate(data):
        stop = 1 if stop_bits is None else stop_bits[i]
        for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [stop]:
            pin.value = bit
            await Timer(bit_ps, unit="ps")
        pin.value = 1
        if stop == 0:
            await Timer(bit_ps, unit="ps")  # let the line be seen high again after a break
        if max_gap_bits and rng is not None:
            gap = int(rng.random() * max_gap_bits * bit_ps)
            if gap:
                await Timer(gap, unit="ps")


async def uart_recv(dut, pin, count: int, divisor: int, *, timeout_cycles: int = 1_000_000,
                    start_cycles: list | None = None):
    """Decode ``count`` 8N1 bytes from ``pin`` (synchronous to ``dut.clk``) sampling at bit centres.

    Asserts a correct stop bit. If ``start_cycles`` is a list, the cycle of each start bit's
    falling edge (counted from the call) is appended to it.
    """
    out = []
    cycle = [0]

    async def count_cycles():
        while True:
            await RisingEdge(dut.clk)
            cycle[0] += 1

    counter = cocotb.start_soon(count_cycles())
    try:
        for _ in range(count):
            while int(pin.value) == 1:
                await RisingEdge(dut.clk)
                await ReadOnly()
                assert cycle[0] < timeout_cycles, f"no start bit after {cycle[0]} cycles ({len(out)}/{count})"
            if start_cycles is not None:
                start_cycles.append(cycle[0])
            await ClockCycles(dut.clk, divisor // 2)
            await ReadOnly()
            assert int(pin.value) == 0, "start bit not low at its centre"
            byte = 0
            for k in range(8):
                await ClockCycles(dut.clk, divisor)
                await ReadOnly()
                byte |= int(pin.value) << k
            await ClockCycles(dut.clk, divisor)
            await ReadOnly()
            assert int(pin.value) == 1, f"stop bit low after byte {byte:#04x}"
            out.append(byte)
        await RisingEdge(dut.clk)  # leave the read-only phase: the caller may drive pins next
    finally:
        counter.cancel()
    return out


class PulseCounter:
    """Counts rising edges of a one-bit signal."""

    def __init__(self, signal):
        self.count = 0
        self._task = cocotb.start_soon(self._run(signal))

    async def _run(self, signal):
        while True:
            await RisingEdge(signal)
            self.count += 1

    def stop(self):
        self._task.cancel()


async def _setup(dut):
    dut.rx.value = 1
    dut.tx_stream__valid.value = 0
    dut.rx_stream__ready.value = 0
    await reset(dut)
    await ClockCycles(dut.clk, 5)


async def _rx_check(dut, error: float, n: int, seed: int, max_gap_bits: float = 0):
    div = params()["divisor"]
    rng = random.Random(seed)
    await _setup(dut)
    fe = PulseCounter(dut.framing_error)
    ov = PulseCounter(dut.overrun)
    data = [rng.randrange(256) for _ in range(n)]
    await Timer(rng.randrange(1, CLK_PS), unit="ps")  # the sender's edges are not clock-aligned
    bit_ps = round(div * CLK_PS * (1 + error))
    sender = cocotb.start_soon(uart_send(dut.rx, data, bit_ps, rng=rng, max_gap_bits=max_gap_bits))
    got = await StreamSink(dut, "rx_stream").recv(n, timeout_cycles=n * (div * 14 + 20) + 1000)
    await sender
    assert got == data, f"received {got[:16]}..., sent {data[:16]}..."
    assert fe.count == 0 and ov.count == 0, f"{fe.count} framing errors, {ov.count} overruns"


@cocotb.test()
async def rx_back_to_back(dut):
    await _rx_check(dut, 0.0, 200, 1)


@cocotb.test()
async def rx_with_gaps(dut):
    await _rx_check(dut, 0.0, 100, 2, max_gap_bits=3)


@cocotb.test()
async def rx_sender_2pc_fast(dut):
    await _rx_check(dut, -0.02, 150, 3)


@cocotb.test()
async def rx_sender_2pc_slow(dut):
    await _rx_check(dut, +0.02, 150, 4)


@cocotb.test()
async def rx_sender_6pc_off_fails(dut):
    """Well outside the tolerance back-to-back bytes are corrupted: the test above can fail."""
    div = params()["divisor"]
    await _setup(dut)
    rng = random.Random(5)
    data = [rng.randrange(256) for _ in range(64)]
    bit_ps = round(div * CLK_PS * 1.06)
    sender = cocotb.start_soon(uart_send(dut.rx, data, bit_ps))
    got = []
    dut.rx_stream__ready.value = 1
    while not sender.done():
        await RisingEdge(dut.clk)
        await ReadOnly()
        if dut.rx_stream__valid.value:
            got.append(int(dut.rx_stream__payload.value))
    assert got != data


@cocotb.test()
async def rx_framing_error(dut):
    div = params()["divisor"]
    await _setup(dut)
    fe = PulseCounter(dut.framing_error)
    bit_ps = div * CLK_PS
    data = [0x55, 0x00, 0xA5, 0x3C]
    stops = [1, 0, 1, 1]  # the 0x00 byte has a low stop bit (a break-like frame)
    sender = cocotb.start_soon(uart_send(dut.rx, data, bit_ps, stop_bits=stops))
    got = await StreamSink(dut, "rx_stream").recv(3, timeout_cycles=div * 60)
    await sender
    assert got == [0x55, 0xA5, 0x3C], got
    assert fe.count == 1, f"{fe.count} framing error pulses, expected 1"


@cocotb.test()
async def rx_glitch_ignored(dut):
    div = params()["divisor"]
    await _setup(dut)
    dut.rx.value = 0
    await Timer((div // 2 - 2) * CLK_PS, unit="ps")  # shorter than half a bit (after sync)
    dut.rx.value = 1
    await Timer(3 * div * CLK_PS, unit="ps")
    await ReadOnly()
    assert not dut.rx_busy.value and not dut.rx_stream__valid.value
    await RisingEdge(dut.clk)
    sender = cocotb.start_soon(uart_send(dut.rx, [0x81], div * CLK_PS))
    got = await StreamSink(dut, "rx_stream").recv(1, timeout_cycles=div * 20)
    await sender
    assert got == [0x81]


@cocotb.test()
async def rx_overrun(dut):
    div = params()["divisor"]
    await _setup(dut)
    ov = PulseCounter(dut.overrun)
    await uart_send(dut.rx, [0x11, 0x22], div * CLK_PS)  # nobody takes the bytes
    await ClockCycles(dut.clk, div)
    assert ov.count == 1
    got = await StreamSink(dut, "rx_stream").recv(1, timeout_cycles=10)
    assert got == [0x11]


@cocotb.test()
async def tx_random_bytes(dut):
    div = params()["divisor"]
    await _setup(dut)
    rng = random.Random(6)
    data = [rng.randrange(256) for _ in range(120)]
    starts = []
    receiver = cocotb.start_soon(uart_recv(dut, dut.tx, len(data), div, start_cycles=starts))
    await StreamSource(dut, "tx_stream", p_idle=0.0).send(data)
    got = await receiver
    assert got == data
    # Back-to-back: each start bit follows the previous one by exactly 10 bit periods.
    gaps = {b - a for a, b in zip(starts, starts[1:])}
    assert gaps == {10 * div}, f"start-to-start gaps {sorted(gaps)}, expected {{{10 * div}}}"


@cocotb.test()
async def tx_with_idle(dut):
    div = params()["divisor"]
    await _setup(dut)
    rng = random.Random(7)
    data = [rng.randrange(256) for _ in range(40)]
    receiver = cocotb.start_soon(uart_recv(dut, dut.tx, len(data), div))
    src = StreamSource(dut, "tx_stream", p_idle=0.9, rng=rng)
    await src.send(data)
    assert await receiver == data
