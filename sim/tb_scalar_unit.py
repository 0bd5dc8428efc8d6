"""cocotb testbench: ScalarUnit against the instruction-level executor ``sw.isa_sim.Core``.

Every instruction is first executed by ``Core._exec`` (the executor's own scalar semantics and
function units, reading the same seed tables); instructions the executor rejects (operands the
hardware does not have to handle) are not sent. The monitor then checks, for every instruction:

* its result beat: the values written to ``rd`` (and ``rc``), in the executor's order;
* the register file through the read ports in the following cycle (``rd``, ``rc`` and one more
  register) against the executor's registers after that instruction, and all 32 at the end;
* its latency: accepted in cycle ``t``, result in cycle ``t + SCALAR_CYCLES[op]``; when the
  instructions are sent back to back, the next one is accepted in that same cycle, i.e. a chain
  of dependent instructions runs at the rate of the cycle model.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from models.fixedpoint import recip_table, rsqrt_table
from sim.tb import StreamSource, reset, to_signed
from sw.isa import REG_BITS, Instr, Op, encode
from sw.isa_sim import SCALAR_CYCLES, Core

W = REG_BITS
MAXV, MINV = (1 << (W - 1)) - 1, -(1 << (W - 1))
# TMEM image: the layout of sw.program (reciprocal seeds at 0, rsqrt seeds at 256), plus a second
# copy of the reciprocal seeds at 640 to exercise the table base in imm.
RECIP, RSQRT = np.asarray(recip_table(), np.int64), np.asarray(rsqrt_table(), np.int64)
TMEM = np.zeros(1024, np.int64)
TMEM[0:256], TMEM[256:640] = RECIP, RSQRT
TMEM[640:896] = RECIP
BASES_RECIP = (0, 640)


class ModelCore(Core):
    """The executor without a compiled model: registers and TMEM only; logs every write."""

    def __init__(self, tmem):  # noqa: D107 (deliberately not calling Core.__init__)
        self.regs = [0] * 32
        self.pending = []
        self.tmem = np.asarray(tmem, dtype=np.int64).copy()
        self.cmem = np.zeros(1, dtype=np.int64)
        self.log = []

    def _w(self, i, v):
        self.log.append((i, int(v)))
        super()._w(i, v)


class Program:
    """Instructions accepted by the executor, with the writes and register file after each."""

    def __init__(self, rng):
        self.rng = rng
        self.m = ModelCore(TMEM)
        self.ins, self.exp = [], []

    def emit(self, ins: Instr) -> bool:
        saved = list(self.m.regs)
        self.m.log = []
        try:
            self.m._exec(ins)
        except (ValueError, OverflowError):
            self.m.regs = saved
            return False
        self.ins.append(ins)
        self.exp.append((ins, list(self.m.log), list(self.m.regs)))
        return True

    def must(self, ins: Instr) -> None:
        assert self.emit(ins), f"the executor rejects {ins}"

    def load(self, r: int, v: int) -> None:
        """Put a 54-bit value into r with SLI / SRSHI / SADD (as a program would)."""
        hi, mid, lo = v >> 36, (v >> 18) & 0x3FFFF, v & 0x3FFFF
        self.must(Instr(Op.SLI, rd=r, imm=hi))
        self.must(Instr(Op.SRSHI, rd=r, ra=r, imm=-18))
        self.must(Instr(Op.SADD, rd=r, ra=r, rb=0, imm=mid))
        self.must(Instr(Op.SRSHI, rd=r, ra=r, imm=-18))
        self.must(Instr(Op.SADD, rd=r, ra=r, rb=0, imm=lo))
        assert self.m.regs[r] == v or r == 0

    def cycles(self) -> int:
        return sum(SCALAR_CYCLES[i.op] for i in self.ins)


EDGE = [0, 1, -1, 2, -2, MAXV, MINV, MAXV - 1, MINV + 1, (1 << 17) - 1, 1 << 17, -(1 << 17), (1 << 18) - 1,
        (1 << 15), (1 << 16) - 1, (1 << 14), (1 << 52), (1 << 53) - 1]


def edge_program(rng) -> Program:
    """Directed cases: extreme values, bit lengths, rounding ties, normalisers, multiplies."""
    p = Program(rng)
    for v in EDGE:
        p.load(3, v)
        for ins in (Instr(Op.SADD, rd=4, ra=3, rb=0, imm=0), Instr(Op.SSUB, rd=5, ra=0, rb=3, imm=-1),
                    Instr(Op.SMAXI, rd=6, ra=3, imm=-(1 << 19)), Instr(Op.SMAXI, rd=6, ra=3, imm=(1 << 19) - 1),
                    Instr(Op.SBLEN, rd=7, ra=3, imm=0), Instr(Op.SNORM, rd=8, rc=9, ra=3),
                    Instr(Op.SMANT16, rd=10, rc=11, ra=3), Instr(Op.SZSEL, rd=12, ra=3, rb=4, rc=5),
                    Instr(Op.SRSQ, rd=13, rc=14, ra=3, imm=256), Instr(Op.SRSHI, rd=15, ra=3, imm=0),
                    Instr(Op.SRSHI, rd=15, ra=3, imm=1), Instr(Op.SRSHI, rd=15, ra=3, imm=53),
                    Instr(Op.SRSHI, rd=15, ra=3, imm=54), Instr(Op.SRSHI, rd=15, ra=3, imm=55),
                    Instr(Op.SRSHI, rd=15, ra=3, imm=(1 << 19) - 1), Instr(Op.SRSHI, rd=15, ra=3, imm=-1),
                    Instr(Op.SRSHI, rd=15, ra=3, imm=-(1 << 19)), Instr(Op.SMUL, rd=16, ra=3, rb=3),
                    Instr(Op.SMULI, rd=16, ra=3, imm=-(1 << 17)), Instr(Op.SMULI, rd=16, ra=3, imm=(1 << 18) - 1)):
            p.emit(ins)
    # bit length of 0, powers of two and their neighbours
    for k in range(W - 1):
        for v in {1 << k, (1 << k) - 1, (1 << k) + 1}:
            if v <= MAXV:
                p.load(3, v)
                p.must(Instr(Op.SBLEN, rd=4, ra=3, imm=rng.randrange(-8, 8)))
                p.must(Instr(Op.SNORM, rd=5, rc=6, ra=3))
                p.must(Instr(Op.SMANT16, rd=7, rc=7, ra=3))    # rd == rc: the second write wins
    # rounding ties of both signs, every shift 1..54; register shifts incl. negative and huge
    for s in range(1, W + 1):
        for odd in (1, 3, (1 << max(0, 52 - s)) - 1 | 1):
            v = odd << (s - 1)
            if v > MAXV:
                continue
            for x in (v, -v, v - 1, -v + 1, v + 1, -v - 1):
                if MINV <= x <= MAXV:
                    p.load(3, x)
                    p.must(Instr(Op.SRSHI, rd=4, ra=3, imm=s))
                    p.must(Instr(Op.SLI, rd=5, imm=s))
                    p.must(Instr(Op.SRSHR, rd=6, ra=3, rb=5))
    for sh in (0, -1, -17, -53, -54, 55, 56, 127, 128, -128, 4095, -4095):  # rshift needs |s| small
        p.load(5, sh)
        for x in (0, 1, -1, 3, -3, MAXV, MINV):
            p.load(3, x)
            p.emit(Instr(Op.SRSHR, rd=6, ra=3, rb=5))
    # SNORM rounding up to 2**17 (mantissa 2**16, exponent + 1)
    for e in range(1, 37):
        for x in (((1 << 17) - 1) << e | (1 << (e - 1)), ((1 << 17) - 1) << e | ((1 << (e - 1)) - 1)):
            p.load(3, x)
            p.must(Instr(Op.SNORM, rd=4, rc=5, ra=3))
    # multiplies at the operand limits
    lim = [0, 1, -1, (1 << 17) - 1, 1 << 17, -(1 << 17), (1 << 18) - 1, -(1 << 17) + 1, 12345, -54321]
    for a in lim:
        p.must(Instr(Op.SLI, rd=3, imm=a))
        for b in lim:
            p.must(Instr(Op.SLI, rd=4, imm=b))
            p.must(Instr(Op.SMUL, rd=5, ra=3, rb=4))
            p.must(Instr(Op.SMULI, rd=6, ra=4, imm=a))
    return p


def recip_program(rng, exhaustive: bool) -> Program:
    """SRECIP over the normalised range: every value, or both ends of every table bucket."""
    p = Program(rng)
    if exhaustive:
        mns = range(1 << 15, 1 << 16)
    else:
        mns = sorted({v for j in range(256) for v in ((256 + j) << 7, ((256 + j) << 7) + 127,
                                                    ((256 + j) << 7) + rng.randrange(128))})
    for n, mn in enumerate(mns):
        r = 3 + n % 4
        p.must(Instr(Op.SLI, rd=r, imm=mn))
        p.must(Instr(Op.SRECIP, rd=r + 4, ra=r, imm=BASES_RECIP[n % 2]))
    return p


def rsqrt_program(rng) -> Program:
    """SRSQ: both ends of every seed bucket at k = 0, at random even k and at k < 0, 0, the top."""
    p = Program(rng)
    ends = [v for j in range(384) for v in ((128 + j) << 7, ((128 + j) << 7) + 127)]
    for n, ms in enumerate(ends):
        p.must(Instr(Op.SLI, rd=3, imm=ms))
        p.must(Instr(Op.SRSQ, rd=4, rc=5, ra=3, imm=256))
    for ms in ends[::5] + [1 << 14, (1 << 16) - 1]:
        k = 2 * rng.randrange(0, 19)
        ss = (ms << k) | rng.getrandbits(k) if k else ms
        p.load(3, ss)
        p.must(Instr(Op.SRSQ, rd=4, rc=4, ra=3, imm=256))   # rd == rc: k wins
        p.must(Instr(Op.SRSQ, rd=6, rc=7, ra=3, imm=256))
    for ss in list(range(0, 40)) + [(1 << 14) - 1, 1 << 13, 3 << 12, MAXV, MAXV >> 1, (MAXV >> 1) + 1]:
        p.load(3, ss)
        p.must(Instr(Op.SRSQ, rd=4, rc=5, ra=3, imm=256))
    return p


SCALAR = [Op.SLI, Op.SADD, Op.SSUB, Op.SMAXI, Op.SRSHI, Op.SRSHR, Op.SBLEN, Op.SZSEL, Op.SMUL, Op.SMULI,
          Op.SNORM, Op.SMANT16, Op.SRECIP, Op.SRSQ]


def random_program(rng, n: int) -> Program:
    """Random instructions over a small register pool (dense dependencies), plus some no-ops."""
    p = Program(rng)
    imms = [0, 1, -1, (1 << 19) - 1, -(1 << 19), (1 << 17) - 1, -(1 << 17), (1 << 18) - 1]

    def reg():
        return rng.randrange(8) if rng.random() < 0.8 else rng.randrange(32)

    def imm():
        c = rng.random()
        return rng.choice(imms) if c < 0.2 else rng.randrange(-64, 64) if c < 0.5 else rng.randrange(-(1 << 19), 1 << 19)

    def pick(pred):
        cands = [i for i in range(32) if pred(p.m.regs[i] if i else 0)]
        return rng.choice(cands) if cands else None

    while len(p.ins) < n:
        c = rng.random()
        if c < 0.05:
            p.load(reg(), rng.choice(EDGE + [rng.randrange(MINV, MAXV + 1)]))
            continue
        if c < 0.08:
            p.must(Instr(rng.choice([Op.NOP, Op.SYNC, Op.HALT]), rd=reg(), ra=reg()))
            continue
        op = rng.choice(SCALAR)
        rd, ra, rb, rc = reg(), reg(), reg(), reg()
        if op in (Op.SMUL, Op.SMULI):
            fits = lambda v: -(1 << 17) <= v < (1 << 18)  # noqa: E731
            ra = pick(fits)
            rb = pick(fits)
            i = rng.randrange(-(1 << 17), 1 << 18) if rng.random() < 0.7 else imm()
            p.emit(Instr(op, rd=rd, ra=ra, rb=rb, imm=i))
        elif op == Op.SRECIP:
            ra = pick(lambda v: (1 << 15) <= v < (1 << 16))
            if ra is None:
                src, rd = pick(lambda v: v >= 0), rng.randrange(1, 8)
                p.must(Instr(Op.SMANT16, rd=rd, rc=rc if rc != rd else 0, ra=src))
                ra = rd
            p.must(Instr(op, rd=reg(), ra=ra, imm=rng.choice(BASES_RECIP)))
        elif op == Op.SRSQ:
            p.must(Instr(op, rd=rd, rc=rc, ra=pick(lambda v: 0 <= v < (1 << 53)), imm=256))
        elif op in (Op.SBLEN, Op.SNORM, Op.SMANT16):
            p.must(Instr(op, rd=rd, rc=rc, ra=pick(lambda v: v >= 0), imm=imm()))
        elif op == Op.SRSHR:   # the executor's rshift builds 2**(s - 1): keep |s| small
            p.emit(Instr(op, rd=rd, ra=ra, rb=pick(lambda v: -4096 <= v <= 4096)))
        elif op == Op.SRSHI:
            s = rng.randrange(-56, 57) if rng.random() < 0.9 else imm()
            p.emit(Instr(op, rd=rd, ra=ra, imm=s))
        else:
            p.emit(Instr(op, rd=rd, ra=ra, rb=rb, rc=rc, imm=imm()))
    return p


def _beat(word: int):
    rd, rd_data = word & 31, to_signed(word >> 5, W)
    rc_en, rc, rc_data = (word >> 59) & 1, (word >> 60) & 31, to_signed(word >> 65, W)
    return rd, rd_data, rc_en, rc, rc_data


async def load_tmem(dut, image):
    for a, v in enumerate(image):
        dut.tmem_w__addr.value = a
        dut.tmem_w__data.value = int(v)
        dut.tmem_w__en.value = 1
        await RisingEdge(dut.clk)
    dut.tmem_w__en.value = 0


async def setup(dut):
    dut.instr__valid.value = 0
    dut.write__en.value = 0
    dut.clear.value = 0
    dut.tmem_w__en.value = 0
    for k in range(3):
        getattr(dut, f"read__{k}__addr").value = 0
    await reset(dut)
    await load_tmem(dut, TMEM)


async def run(dut, p: Program, p_idle: float, seed: int, check_timing: bool = True):
    """Send p's instructions (idle cycles with probability p_idle) and check every result."""
    src = StreamSource(dut, "instr", p_idle=p_idle, rng=random.Random(seed))
    writing = [(ins, log, regs) for ins, log, regs in p.exp if log]
    widx = [n for n, (_, log, _) in enumerate(p.exp) if log]
    cocotb.start_soon(src.send([encode(i) for i in p.ins]))
    rrng = random.Random(seed + 7)
    cycle, k, accepts, pending = 0, 0, [], None
    while k < len(writing) or len(accepts) < len(p.ins):
        if cycle:
            await RisingEdge(dut.clk)
        cycle += 1
        assert cycle < 40 * len(p.ins) + 1000, f"timed out after {k} of {len(writing)} results"
        if pending is not None:
            ins, regs, other = pending
            addrs = (ins.rd, ins.rc, other)
            for j, a in enumerate(addrs):
                getattr(dut, f"read__{j}__addr").value = a
        await ReadOnly()
        if pending is not None:
            for j, a in enumerate(addrs):
                got = to_signed(int(getattr(dut, f"read__{j}__data").value), W)
                assert got == regs[a], f"after {ins}: read port r{a} = {got}, executor {regs[a]}"
            pending = None
        if dut.instr__valid.value and dut.instr__ready.value:
            accepts.append(cycle)
        if dut.result__valid.value:
            ins, log, regs = writing[k]
            rd, rd_data, rc_en, rc, rc_data = _beat(int(dut.result__payload.value))
            assert rd == ins.rd and rd_data == log[0][1], \
                f"result {k} ({ins}): rd r{rd} = {rd_data}, executor r{log[0][0]} = {log[0][1]}"
            if len(log) == 2:
                assert rc_en and rc == ins.rc and rc_data == log[1][1], \
                    f"result {k} ({ins}): rc r{rc} = {rc_data} (en {rc_en}), executor {log[1][1]}"
            else:
                assert not rc_en, f"result {k} ({ins}): unexpected second write"
            pending = (ins, regs, rrng.randrange(32))
            assert widx[k] < len(accepts), f"result of {ins} before it was accepted"
            lat = cycle - accepts[widx[k]]
            assert lat == SCALAR_CYCLES[ins.op], f"{ins}: {lat} cycles, the cycle model says {SCALAR_CYCLES[ins.op]}"
            k += 1
    # the whole register file
    await RisingEdge(dut.clk)
    final = p.exp[-1][2]
    for r in range(32):
        dut.read__0__addr.value = r
        await ReadOnly()
        got = to_signed(int(dut.read__0__data.value), W)
        assert got == final[r], f"final r{r} = {got}, executor {final[r]}"
        await RisingEdge(dut.clk)
    if check_timing and p_idle == 0:
        # back to back: one instruction accepted per cycle of the cycle model (plus the first)
        assert accepts[-1] - accepts[0] == sum(SCALAR_CYCLES[i.op] for i in p.ins[:-1]), \
            "instructions were not accepted at the cycle model's rate"
    dut._log.info(f"{len(p.ins)} instructions, {len(writing)} results, {cycle} cycles")


@cocotb.test()
async def test_edges(dut):
    await setup(dut)
    await run(dut, edge_program(random.Random(1)), p_idle=0.0, seed=1)


@cocotb.test()
async def test_recip_range(dut):
    await setup(dut)
    await run(dut, recip_program(random.Random(2), exhaustive=False), p_idle=0.0, seed=2)


@cocotb.test()
async def test_rsqrt_range(dut):
    await setup(dut)
    await run(dut, rsqrt_program(random.Random(3)), p_idle=0.0, seed=3)


@cocotb.test()
async def test_random_back_to_back(dut):
    await setup(dut)
    await run(dut, random_program(random.Random(4), 3000), p_idle=0.0, seed=4)


@cocotb.test()
async def test_random_stalls(dut):
    await setup(dut)
    await run(dut, random_program(random.Random(5), 2000), p_idle=0.4, seed=5)


@cocotb.test()
async def test_write_port(dut):
    """External writes land in the register file and are used by the next instruction; r0 stays 0."""
    await setup(dut)
    rng = random.Random(6)
    p = Program(rng)
    vals = {r: rng.choice(EDGE + [rng.randrange(MINV, MAXV + 1)]) for r in range(32)}
    for r, v in vals.items():
        dut.write__en.value = 1
        dut.write__addr.value = r
        dut.write__data.value = v & ((1 << W) - 1)
        await RisingEdge(dut.clk)
        if r:
            p.m.regs[r] = v
    dut.write__en.value = 0
    await RisingEdge(dut.clk)
    for r in range(32):
        dut.read__1__addr.value = r
        await ReadOnly()
        got = to_signed(int(dut.read__1__data.value), W)
        assert got == (vals[r] if r else 0), f"r{r} = {got} after an external write of {vals[r]}"
        await RisingEdge(dut.clk)
    for r in range(1, 32):
        p.emit(Instr(Op.SADD, rd=r, ra=r, rb=(r + 1) % 32, imm=r))
    await run(dut, p, p_idle=0.0, seed=6, check_timing=False)


@cocotb.test()
async def test_clear(dut):
    """clear: every register reads 0 in the next cycle, except one written in the same cycle;
    instructions then compute from zeros."""
    await setup(dut)
    rng = random.Random(7)
    p = Program(rng)
    for r in range(32):
        v = rng.randrange(1, 1 << 40)
        dut.write__en.value, dut.write__addr.value, dut.write__data.value = 1, r, v
        await RisingEdge(dut.clk)
        if r:
            p.m.regs[r] = v
    dut.write__en.value = 0
    p.emit(Instr(Op.SLI, rd=7, imm=5))           # rd and rc (SNORM) banks hold values too
    p.emit(Instr(Op.SNORM, rd=8, rc=9, ra=7))
    await run(dut, p, p_idle=0.0, seed=7, check_timing=False)
    dut.clear.value = 1
    dut.write__en.value, dut.write__addr.value, dut.write__data.value = 1, 1, 1234
    await RisingEdge(dut.clk)
    dut.clear.value, dut.write__en.value = 0, 0
    for r in range(32):
        dut.read__2__addr.value = r
        await ReadOnly()
        got = to_signed(int(dut.read__2__data.value), W)
        assert got == (1234 if r == 1 else 0), f"r{r} = {got} after clear"
        await RisingEdge(dut.clk)
    p = Program(rng)
    p.m.regs = [0] * 32
    p.m.regs[1] = 1234
    p.emit(Instr(Op.SADD, rd=3, ra=1, rb=8, imm=1))
    p.emit(Instr(Op.SADD, rd=4, ra=9, rb=7, imm=2))
    await run(dut, p, p_idle=0.0, seed=8, check_timing=False)


@cocotb.test()
async def test_write_conflict(dut):
    """In one cycle, the unit's own write of rd wins over an external write to the same
    register; an external write to another register in that cycle lands too."""
    await setup(dut)
    for ext in (5, 6):
        dut.instr__valid.value = 1
        dut.instr__payload.value = encode(Instr(Op.SLI, rd=5, imm=-7))
        await RisingEdge(dut.clk)                  # accepted (the unit was idle)
        dut.instr__valid.value = 0
        for _ in range(SCALAR_CYCLES[Op.SLI] - 1):
            await ReadOnly()
            assert not dut.result__valid.value, "SLI result before its latency"
            await RisingEdge(dut.clk)
        dut.write__en.value, dut.write__addr.value, dut.write__data.value = 1, ext, 99
        await ReadOnly()
        assert dut.result__valid.value, "SLI result not SCALAR_CYCLES[SLI] cycles after it was accepted"
        await RisingEdge(dut.clk)
        dut.write__en.value = 0
        dut.read__0__addr.value, dut.read__1__addr.value = 5, 6
        await ReadOnly()
        r5, r6 = (to_signed(int(getattr(dut, f"read__{j}__data").value), W) for j in (0, 1))
        assert r5 == -7, f"r5 = {r5}: the unit's write must win over the external one"
        if ext == 6:
            assert r6 == 99, f"r6 = {r6}: the external write in the same cycle was lost"
        await RisingEdge(dut.clk)
