"""cocotb testbench: :class:`hw.pe.lut_gemm.LutGemv` against the plain integer dot product.

Every GEMV is checked against ``W @ x`` in numpy (and the golden table model is checked to agree
with it). Inputs arrive with random idle cycles, the output sees random back-pressure; one test
runs without gaps and checks the cycle count of the schedule documented in docs/lut_gemm.md.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from sw import lut_model as lm
from sim.tb import StreamSink, StreamSource, params, reset, to_signed

__all__ = ["Geometry", "gemv_beats"]


class Geometry:
    """The unit's parameters as the testbench needs them (from :func:`sim.tb.params`)."""

    def __init__(self, p: dict):
        self.fmt, self.group, self.symmetric = p["weight_format"], p["group"], p["symmetric"]
        self.lanes, self.tables, self.rows, self.k_max = p["lanes"], p["tables"], p["rows"], p["k_max"]
        self.result_width = p["result_width"]
        self.block = self.tables * self.group             # activations per block
        self.tl2 = self.fmt == "tl2"
        self.code_bits = 5 if self.tl2 else lm.weight_bits(self.fmt)
        self.per_lane = self.tables if self.tl2 else self.block
        self.n = self.rows * self.lanes                    # output rows per GEMV
        self.entries = lm.table_entries(self.fmt, self.group, self.symmetric)


def gemv_beats(geo: Geometry, w: np.ndarray, x: np.ndarray):
    """Input beats (act, weights) for one GEMV of ``w`` (N x K, K a multiple of the block)."""
    n, k = w.shape
    assert n == geo.n and k % geo.block == 0 and len(x) == k
    blocks = k // geo.block
    codes = lm.encode_weights(w, geo.fmt)                  # (N, K/3) TL2 codes or (N, K) q values
    acts, wbeats = [], []
    for c in range(blocks):
        xb = x[c * geo.block:(c + 1) * geo.block]
        word = sum((int(v) & 0xFF) << (8 * i) for i, v in enumerate(xb))
        acts.append(word | (int(c == blocks - 1) << (8 * geo.block)))
        cols = codes[:, c * geo.per_lane:(c + 1) * geo.per_lane]
        for r in range(geo.rows):
            tile = cols[r * geo.lanes:(r + 1) * geo.lanes]
            word = 0
            for p in range(geo.lanes):
                for i in range(geo.per_lane):
                    word |= int(tile[p, i]) << ((p * geo.per_lane + i) * geo.code_bits)
            wbeats.append(word)
    return acts, wbeats


def expected(geo: Geometry, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``W @ x`` in plain integers; the golden table model must agree."""
    y = w.astype(np.int64) @ x.astype(np.int64)
    model = lm.lut_gemv(w, x, geo.fmt, geo.group, geo.symmetric)
    assert np.array_equal(model, y), "golden table model disagrees with W @ x"
    return y


def unpack_results(geo: Geometry, beats) -> np.ndarray:
    rw = geo.result_width
    return np.array([to_signed(b >> (p * rw), rw) for b in beats for p in range(geo.lanes)],
                    np.int64)


async def run_gemvs(dut, geo, cases, p_idle=0.3, p_stall=0.3, seed=0):
    """Stream every (w, x) case through the unit back to back and compare all outputs."""
    acts, wbeats, want = [], [], []
    for w, x in cases:
        a, b = gemv_beats(geo, w, x)
        acts += a
        wbeats += b
        want.append(expected(geo, w, x))
    src_a = StreamSource(dut, "act", p_idle, random.Random(seed + 1))
    src_w = StreamSource(dut, "weights", p_idle, random.Random(seed + 2))
    sink = StreamSink(dut, "result", p_stall, random.Random(seed + 3))
    dut.result__ready.value = 0
    await reset(dut)
    cocotb.start_soon(src_a.send(acts))
    cocotb.start_soon(src_w.send(wbeats))
    got = unpack_results(geo, await sink.recv(geo.rows * len(cases), timeout_cycles=200_000))
    want = np.concatenate(want)
    bad = np.flatnonzero(got != want)
    assert not len(bad), (f"{len(bad)} of {len(want)} dot products differ; first at output "
                          f"{bad[0]}: got {got[bad[0]]}, want {want[bad[0]]}")
    # Nothing more comes out.
    for _ in range(20):
        await ReadOnly()
        assert not dut.result__valid.value, "an extra result beat appeared"
        await RisingEdge(dut.clk)


def random_weights(rng, geo, shape):
    lo, hi = lm.weight_range(geo.fmt)
    return rng.integers(lo, hi + 1, shape)


@cocotb.test()
async def random_gemvs(dut):
    geo = Geometry(params())
    rng = np.random.default_rng(11)
    max_blocks = geo.k_max // geo.block
    cases = []
    for blocks in [1, 2, max_blocks, *rng.integers(1, max_blocks + 1, 3)]:
        k = int(blocks) * geo.block
        cases.append((random_weights(rng, geo, (geo.n, k)), rng.integers(-127, 128, k)))
    await run_gemvs(dut, geo, cases, seed=1)


@cocotb.test()
async def edge_gemvs(dut):
    # K at the accumulator bound with the extreme activations and codes, all-zero weights, and
    # mixed extremes; any overflow of a table entry or accumulator shows as a wrong result.
    geo = Geometry(params())
    k = (geo.k_max // geo.block) * geo.block
    lo, hi = lm.weight_range(geo.fmt)
    rng = np.random.default_rng(12)
    cases = []
    for xv in (127, -127):
        x = np.full(k, xv)
        for wv in (lo, hi, 0):
            cases.append((np.full((geo.n, k), wv), x))
    alt = np.resize([127, -127], k)
    cases.append((np.where(alt > 0, hi, lo)[None, :].repeat(geo.n, 0), alt))
    cases.append((np.where(alt > 0, lo, hi)[None, :].repeat(geo.n, 0), alt))
    cases.append((rng.choice([lo, hi], (geo.n, k)), rng.choice([-127, 127], k)))
    await run_gemvs(dut, geo, cases, p_idle=0.2, p_stall=0.5, seed=2)


@cocotb.test()
async def full_rate(dut):
    # No gaps, no back-pressure: one weight beat per cycle once the tables are ahead, so a GEMV
    # of B blocks ends within B * cycles_per_block + entries + 6 cycles of the first beat.
    geo = Geometry(params())
    rng = np.random.default_rng(13)
    blocks = max(1, geo.k_max // geo.block)
    k = blocks * geo.block
    cases = [(random_weights(rng, geo, (geo.n, k)), rng.integers(-127, 128, k))]
    start = cocotb.utils.get_sim_time("ns")
    await run_gemvs(dut, geo, cases, p_idle=0.0, p_stall=0.0, seed=3)
    cycles = int((cocotb.utils.get_sim_time("ns") - start) // 10) - 2 - 20   # reset, idle check
    per_block = max(geo.rows, geo.entries + 1)
    bound = blocks * per_block + geo.entries + 6
    dut._log.info(f"{blocks} blocks of {geo.rows} row tiles: {cycles} cycles "
                  f"(schedule bound {bound})")
    assert cycles <= bound, f"{cycles} cycles for {blocks} blocks, schedule allows {bound}"
