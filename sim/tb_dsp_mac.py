"""cocotb testbench: DspMac (int8 x int8 on MULT18X18D) against a numpy int64 dot product.

Several dot products of different lengths per test, random idle cycles on the input and random
back-pressure on the output; the protocol monitor of the adder-tree testbench checks that stalled
output beats stay put.
"""

import random

import cocotb
import numpy as np

from sim.tb import StreamSink, StreamSource, params, reset
from sim.tb_adder_tree import check_results, stall_monitor

__all__ = []


def beat_word(x, w_rows, last):
    """Input payload: x[0..N-1], then row 0's N int8 weights, row 1's, ..., then ``last``."""
    word, pos = 0, 0
    for v in list(x) + [v for row in w_rows for v in row]:
        word |= (int(v) & 0xFF) << pos
        pos += 8
    return word | (int(last) << pos)


async def run_jobs(dut, jobs, p_idle, p_stall, seed):
    p = params()
    lanes, rows, aw = p["lanes"], p["rows"], p["acc_width"]
    assert len(dut.o__payload) == rows * aw
    rng = random.Random(seed)
    src = StreamSource(dut, "i", p_idle=p_idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", p_stall=p_stall, rng=random.Random(rng.random()))
    beats, expected = [], []
    for x, w in jobs:
        for b in range(len(x)):
            beats.append(beat_word(x[b], w[b], b == len(x) - 1))
        # ``golden_offset`` (0 unless a test checks that a wrong golden model is caught)
        expected.append([int(np.einsum("bn,bn->", w[:, r, :].astype(np.int64), x.astype(np.int64)))
                         + p.get("golden_offset", 0) for r in range(rows)])
    await check_results(dut, src, sink, beats, expected, [len(x) * lanes for x, _ in jobs], rows, aw)


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
    rng = np.random.default_rng(5)
    max_beats = k_max // lanes
    jobs = [(rng.integers(-128, 128, (b, lanes)), rng.integers(-128, 128, (b, rows, lanes)))
            for b in [1, max_beats, 2, 1, 3] + list(rng.integers(1, max_beats + 1, 10))]
    await run_jobs(dut, jobs, p_idle=0.3, p_stall=0.4, seed=21)


@cocotb.test()
async def extremes_at_k_max(dut):
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    await start(dut)
    beats = k_max // lanes
    jobs = []
    for xv in (127, -127, -128):
        for wv in (127, -127, -128, 1, -1, 0):
            jobs.append((np.full((beats, lanes), xv), np.full((beats, rows, lanes), wv)))
    await run_jobs(dut, jobs, p_idle=0.2, p_stall=0.5, seed=22)
