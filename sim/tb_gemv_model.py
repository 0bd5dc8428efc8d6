"""cocotb testbench: every ternary GEMV of several token steps of a real model on GemvEngine.

The test writes the model's whole weight image (sw.compiler) into the engine, then replays the
int8 activation vectors that the integer reference computed for each BitLinear of each token
and checks every accumulator bit-exactly against the reference's. It also counts the engine
cycles of each token's GEMVs.
"""

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from sim.tb import params, reset, to_signed
from sim.tb_gemv import cmd_word, unpack_out
from sw.gemv_layout import act_words


@cocotb.test()
async def model_gemvs_match_intref(dut):
    p = params()
    data = np.load(p["data"])
    lanes, rows, aw = p["lanes"], p["rows"], p["acc_width"]
    chunks_max = p["k_max"] // lanes
    dut.w_wr__en.value = 0
    dut.a_wr__en.value = 0
    dut.cmd__valid.value = 0
    dut.o__ready.value = 1
    await reset(dut)
    words = data["words"]
    for addr in range(words.shape[0]):
        dut.w_wr__addr.value = addr
        dut.w_wr__data.value = int.from_bytes(words[addr].tobytes(), "little")
        dut.w_wr__en.value = 1
        await RisingEdge(dut.clk)
    dut.w_wr__en.value = 0
    jobs, xq, acc = data["jobs"], data["xq"], data["acc"]
    x_off = np.concatenate([[0], np.cumsum(jobs[:, 5])])
    a_off = np.concatenate([[0], np.cumsum(jobs[:, 4])])
    cycles = {}
    for j, (token, base, groups, chunks, m, k) in enumerate(jobs.tolist()):
        bank = j % 2
        for c, word in enumerate(act_words(xq[x_off[j]:x_off[j + 1]], lanes)):
            dut.a_wr__addr.value = bank * chunks_max + c
            dut.a_wr__data.value = word
            dut.a_wr__en.value = (1 << lanes) - 1
            await RisingEdge(dut.clk)
        dut.a_wr__en.value = 0
        dut.cmd__payload.value = cmd_word(p, base, groups, chunks, bank)
        dut.cmd__valid.value = 1
        await RisingEdge(dut.clk)
        dut.cmd__valid.value = 0
        n, got = 1, []
        while len(got) < groups * rows:
            await ReadOnly()
            if dut.o__valid.value:
                got.extend(unpack_out(int(dut.o__payload.value), rows, aw))
            await RisingEdge(dut.clk)
            n += 1
        cycles[token] = cycles.get(token, 0) + n
        expected = acc[a_off[j]:a_off[j + 1]].tolist()
        assert got[:m] == expected, (f"job {j} (token {token}, base {base}): first mismatch at row "
                                     f"{next(i for i in range(m) if got[i] != expected[i])}")
        assert not any(got[m:]), "padding rows must be zero"
    for token, n in cycles.items():
        dut._log.info("token %d: %d GEMV engine cycles", token, n)
    with open(p["cycles_out"], "w") as f:
        f.write(" ".join(str(cycles[t]) for t in sorted(cycles)))
