"""cocotb testbench: TernaryAdderTree against a numpy dot product of the unpacked weights.

Every test streams several dot products of different lengths through the PE with random idle
cycles on the input and random back-pressure on the output, and compares each output beat with
``sum(w * x)`` computed in int64 from the weights as :mod:`sw.packing` unpacks them. A protocol
monitor checks that a stalled output beat stays valid and unchanged until it is taken.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.simtime import get_sim_time

from sim.tb import StreamSink, StreamSource, params, reset, to_signed
from sw.packing import pack, to_int, unpack

__all__ = []


def row_bits(lanes, fmt):
    return 2 * lanes if fmt == "2bit" else 8 * -(-lanes // 5)


def beat_word(x, w_rows, last, fmt):
    """Input payload: x[0..N-1] (int8 each), then each row's packed weights, then ``last``."""
    lanes = len(x)
    word = 0
    for j, v in enumerate(x):
        word |= (int(v) & 0xFF) << (8 * j)
    rb = row_bits(lanes, fmt)
    pos = 8 * lanes
    for row in w_rows:
        word |= to_int(pack(np.asarray(row, np.int8), fmt)) << pos
        pos += rb
    return word | (int(last) << pos)


def golden(x, w, fmt):
    """Dot products per row from weights unpacked from their packed form. x: (B, N); w: (B, P, N)."""
    beats, rows, lanes = w.shape
    out = []
    for r in range(rows):
        acc = 0
        for b in range(beats):
            back = unpack(pack(w[b, r].astype(np.int8), fmt), lanes, fmt)
            acc += int(np.dot(back.astype(np.int64), x[b].astype(np.int64)))
        out.append(acc)
    return out


async def stall_monitor(dut):
    """A beat presented on ``o`` must stay valid and unchanged until it is accepted."""
    held = None
    while True:
        await ReadOnly()
        valid, ready = bool(dut.o__valid.value), bool(dut.o__ready.value)
        payload = int(dut.o__payload.value) if valid else None
        if held is not None:
            assert valid and payload == held, "output beat changed or vanished while stalled"
        held = payload if valid and not ready else None
        await RisingEdge(dut.clk)


async def run_jobs(dut, jobs, p_idle, p_stall, seed):
    """Stream ``jobs`` (list of (x, w) with x: (B, N), w: (B, P, N)) and check every result."""
    p = params()
    lanes, rows, fmt, aw = p["lanes"], p["rows"], p["fmt"], p["acc_width"]
    assert len(dut.o__payload) == rows * aw, "output port width differs from acc_width"
    rng = random.Random(seed)
    src = StreamSource(dut, "i", p_idle=p_idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", p_stall=p_stall, rng=random.Random(rng.random()))
    beats, expected = [], []
    for x, w in jobs:
        assert x.shape[1] == lanes and w.shape[1:] == (rows, lanes)
        for b in range(len(x)):
            beats.append(beat_word(x[b], w[b], b == len(x) - 1, fmt))
        expected.append(golden(x, w, fmt))
    await check_results(dut, src, sink, beats, expected, [len(x) * lanes for x, _ in jobs], rows, aw)


async def check_results(dut, src, sink, beats, expected, lengths, rows, aw):
    """Send ``beats``, receive one output beat per expected row vector and compare; then check
    that nothing extra comes out. ``lengths`` (K of each dot product) only label failures."""
    recv = cocotb.start_soon(sink.recv(len(expected), timeout_cycles=20 * len(beats) + 200))
    await src.send(beats)
    words = await recv
    mask = (1 << aw) - 1
    got = [[to_signed((word >> (aw * r)) & mask, aw) for r in range(rows)] for word in words]
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"dot product {n} (K = {lengths[n]}): got {g}, golden {e}"
    for _ in range(10):
        await ReadOnly()
        assert not dut.o__valid.value, "an extra output beat appeared"
        await RisingEdge(dut.clk)


async def start(dut):
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await reset(dut)
    cocotb.start_soon(stall_monitor(dut))


@cocotb.test()
async def random_lengths_with_gaps_and_backpressure(dut):
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    await start(dut)
    rng = np.random.default_rng(1)
    max_beats = k_max // lanes
    jobs = []
    for beats in [1, 2, max_beats, 3, 1, 1, max(1, max_beats // 2), 5 % max_beats + 1] + \
            list(rng.integers(1, max_beats + 1, 12)):
        x = rng.integers(-127, 128, (beats, lanes))
        w = rng.integers(-1, 2, (beats, rows, lanes))
        jobs.append((x, w))
    await run_jobs(dut, jobs, p_idle=0.3, p_stall=0.4, seed=11)


@cocotb.test()
async def extremes_at_k_max(dut):
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    await start(dut)
    beats = k_max // lanes  # K = k_max when lanes divides k_max: the accumulator bound
    jobs = []
    for xv in (127, -127, -128):
        for wv in (1, -1, 0):
            jobs.append((np.full((beats, lanes), xv), np.full((beats, rows, lanes), wv)))
    # Mixed rows: row r gets weight (r % 3) - 1 everywhere, activations +127.
    w = np.zeros((beats, rows, lanes), np.int64)
    for r in range(rows):
        w[:, r, :] = (r % 3) - 1
    jobs.append((np.full((beats, lanes), 127), w))
    # Alternating signs inside a beat and a single-beat product.
    jobs.append((np.full((1, lanes), -127), np.resize([1, -1, 0], (1, rows, lanes))))
    await run_jobs(dut, jobs, p_idle=0.2, p_stall=0.5, seed=12)


@cocotb.test()
async def full_rate_no_stalls(dut):
    """With no gaps and no back-pressure the PE takes one beat per cycle."""
    p = params()
    lanes, rows = p["lanes"], p["rows"]
    await start(dut)
    rng = np.random.default_rng(3)
    jobs = [(rng.integers(-127, 128, (b, lanes)), rng.integers(-1, 2, (b, rows, lanes)))
            for b in (1, 4, 2, 1, 3)]
    start_cycle = get_sim_time(unit="ns")
    await run_jobs(dut, jobs, p_idle=0.0, p_stall=0.0, seed=13)
    beats = sum(len(x) for x, _ in jobs)
    elapsed = (get_sim_time(unit="ns") - start_cycle) / 10
    # beats + pipeline latency + the 10 idle cycles checked at the end, with a little slack
    assert elapsed <= beats + p["latency"] + 10 + 4, f"{beats} beats took {elapsed} cycles"
