"""cocotb testbench: GemvEngine against the integer product W @ x (numpy), several matrices.

Matrices of different shapes are laid out one after the other in the weight memory (as the
model compiler does), activations are written to both banks, and commands are issued back to
back while the output is back-pressured at random.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from sim.tb import StreamSink, StreamSource, params, reset, to_signed
from sw.gemv_layout import act_words, gemv_chunks, gemv_weight_words


async def write_mem(dut, port, words, base=0, en_all=1):
    for i, word in enumerate(words):
        getattr(dut, f"{port}__addr").value = base + i
        getattr(dut, f"{port}__data").value = word
        getattr(dut, f"{port}__en").value = en_all
        await RisingEdge(dut.clk)
    getattr(dut, f"{port}__en").value = 0


def cmd_word(p, base, groups, chunks, bank):
    waw, gw, cw = p["waw"], p["gw"], p["cw"]
    return base | groups << waw | chunks << (waw + gw) | bank << (waw + gw + cw)


def unpack_out(word, rows, aw):
    return [to_signed(word >> (r * aw), aw) for r in range(rows)]


async def run_case(dut, p, cases, p_idle, p_stall, seed):
    lanes, rows, aw, fmt = p["lanes"], p["rows"], p["acc_width"], p["fmt"]
    chunks_max = p["k_max"] // lanes
    rng = np.random.default_rng(seed)
    dut.w_wr__en.value = 0
    dut.a_wr__en.value = 0
    dut.cmd__valid.value = 0
    dut.o__ready.value = 0
    await reset(dut)
    # Lay the matrices out back to back; two activation vectors, one per bank.
    base, jobs = 0, []
    xs = []
    for bank in range(2):
        k = max(c[1] for c in cases)
        kind = cases[0][2] if bank == 0 else "random"
        x = {"random": rng.integers(-127, 128, k), "max": np.full(k, 127), "min": np.full(k, -127)}[kind]
        xs.append(x)
        await write_mem(dut, "a_wr", act_words(x, lanes), base=bank * chunks_max, en_all=(1 << lanes) - 1)
    for (m_, k_, _, wkind) in cases:
        w = {"random": rng.integers(-1, 2, (m_, k_)), "zero": np.zeros((m_, k_), int),
             "plus": np.ones((m_, k_), int), "minus": -np.ones((m_, k_), int)}[wkind].astype(np.int8)
        words = gemv_weight_words(w, lanes, rows, fmt)
        await write_mem(dut, "w_wr", words, base=base)
        groups, chunks = gemv_chunks(m_, k_, lanes, rows)
        jobs.append((w, base, groups, chunks))
        base += len(words)
    src = StreamSource(dut, "cmd", p_idle=p_idle, rng=random.Random(seed))
    sink = StreamSink(dut, "o", p_stall=p_stall, rng=random.Random(seed + 1))
    cmds, expected = [], []
    for i, (w, wbase, groups, chunks) in enumerate(jobs):
        bank = i % 2
        x = xs[bank][:w.shape[1]]
        y = w.astype(np.int64) @ x.astype(np.int64)
        y = np.concatenate([y, np.zeros(groups * rows - len(y), np.int64)])
        cmds.append(cmd_word(p, wbase, groups, chunks, bank))
        expected.extend(y.reshape(groups, rows).tolist())
    cocotb.start_soon(src.send(cmds))
    got = await sink.recv(len(expected), timeout_cycles=200_000)
    got = [unpack_out(g, rows, aw) for g in got]
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"output beat {n}: got {g}, expected {e}"
    return len(expected)


@cocotb.test()
async def random_matrices_with_stalls(dut):
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    cases = [(rows * 3, lanes * 2, "random", "random"), (rows * 2 - 1, lanes * 3 - 5, "random", "random"),
             (1, 1, "random", "random"), (rows, k_max, "random", "random")]
    await run_case(dut, p, cases, p_idle=0.3, p_stall=0.4, seed=1)


@cocotb.test()
async def full_rate_no_stalls(dut):
    # With no back-pressure a matrix of G groups x C chunks takes G*C cycles plus a fixed latency.
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    cases = [(rows * 4, k_max, "random", "random")]
    await run_case(dut, p, cases, p_idle=0.0, p_stall=0.0, seed=2)


@cocotb.test()
async def extremes(dut):
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    for seed, xkind in ((3, "max"), (4, "min")):
        cases = [(rows, k_max, xkind, "plus"), (rows, k_max, xkind, "minus"), (rows * 2, k_max, xkind, "zero")]
        await run_case(dut, p, cases, p_idle=0.1, p_stall=0.5, seed=seed)


@cocotb.test()
async def throughput(dut):
    # Cycle count of one matrix with no stalls: groups*chunks beats, one per cycle.
    p = params()
    lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
    await run_case(dut, p, [(rows, lanes, "random", "random")], 0.0, 0.0, seed=5)  # init memories
    groups, chunks = 8, k_max // lanes
    dut.cmd__payload.value = cmd_word(p, 0, groups, chunks, 0)
    dut.cmd__valid.value = 1
    dut.o__ready.value = 1
    await RisingEdge(dut.clk)
    dut.cmd__valid.value = 0
    cycles, beats = 1, 0
    while beats < groups:
        await ReadOnly()
        beats += int(dut.o__valid.value)
        await RisingEdge(dut.clk)
        cycles += 1
    overhead = cycles - groups * chunks
    # One weight word per cycle plus the engine's documented fixed latency, exactly.
    assert overhead == p["latency"], f"{cycles} cycles for {groups * chunks} beats, latency {p['latency']}"
    dut._log.info("GEMV %d beats in %d cycles (overhead %d)", groups * chunks, cycles, overhead)
