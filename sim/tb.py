"""Shared cocotb testbench helpers: clock and reset, parameters, valid/ready stream drivers.

The drivers insert random idle cycles on the producer side and random back-pressure on the
consumer side, so every stream of every block is exercised under stalls.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

__all__ = ["params", "reset", "StreamSource", "StreamSink", "to_signed"]


def params() -> dict:
    """Design parameters passed by :func:`sim.cocotb_run.run_cocotb`."""
    return json.loads(os.environ.get("TB_PARAMS", "{}"))


def to_signed(value: int, width: int) -> int:
    """Interpret the ``width``-bit unsigned ``value`` as two's complement."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


async def reset(dut, period_ns: int = 10, cycles: int = 2):
    """Start the clock on ``dut.clk`` and hold ``dut.rst`` for ``cycles`` cycles."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


class StreamSource:
    """Drive ``<name>__valid`` / ``<name>__payload``, honouring ``<name>__ready``.

    Parameters
    ----------
    p_idle : float
        Probability of inserting an idle (valid low) cycle before each beat.
    """

    def __init__(self, dut, name: str, p_idle: float = 0.0, rng: random.Random | None = None):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.payload = getattr(dut, f"{name}__payload")
        self.ready = getattr(dut, f"{name}__ready")
        self.p_idle = p_idle
        self.rng = rng or random.Random(1)
        self.valid.value = 0

    async def send(self, beats):
        """Send each payload (an int) in ``beats``; returns when the last one was accepted."""
        for beat in beats:
            while self.rng.random() < self.p_idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = int(beat)
            while True:
                await ReadOnly()
                accepted = bool(self.ready.value)
                await RisingEdge(self.clk)
                if accepted:
                    break
        self.valid.value = 0


class StreamSink:
    """Collect payloads from ``<name>__valid`` / ``<name>__payload`` with random back-pressure."""

    def __init__(self, dut, name: str, p_stall: float = 0.0, rng: random.Random | None = None):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.payload = getattr(dut, f"{name}__payload")
        self.ready = getattr(dut, f"{name}__ready")
        self.p_stall = p_stall
        self.rng = rng or random.Random(2)
        self.ready.value = 0

    async def recv(self, count: int, timeout_cycles: int = 100_000) -> list[int]:
        """Return the next ``count`` payloads as unsigned ints; fail after ``timeout_cycles``."""
        out = []
        waited = 0
        while len(out) < count:
            ready = self.rng.random() >= self.p_stall
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and self.valid.value:
                out.append(int(self.payload.value))
            await RisingEdge(self.clk)
            waited += 1
            assert waited <= timeout_cycles, f"sink timed out after {waited} cycles ({len(out)}/{count} beats)"
        self.ready.value = 0
        return out
