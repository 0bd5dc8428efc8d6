"""cocotb testbench: GemvWriteback against the GEMV semantics of ``sw.isa_sim.Core._gemv``.

The expected VMEM contents and ``rd`` values come from the executor: ``rshift`` for the rescale,
and ``Core._vr`` / ``Core._vw`` (the executor's own VMEM read, saturation, 36-bit word check and
``max |written|``) on a copy of the testbench's VMEM. Commands the executor rejects (a written
value beyond the 36-bit word) are not sent. The testbench models the VMEM (synchronous read
ports, the old value on a read of the address written in the same cycle) and checks:

* every write of every command: the addresses ``a0 .. a0 + n - 1`` in order, each once, with the
  executor's value; no write outside a command; the whole VMEM after the last command;
* ``rd_data`` (with ``rd_we = 1``, ``rc_we = 0``) of each ``done`` pulse, in command order;
* ``cmd.ready == ~busy``, ``busy`` from the cycle after the accept to the ``done`` cycle, exactly
  ``groups`` beats consumed per command;
* two outputs per cycle on two read and two write ports (lane 1 always on the word after lane
  0's); with no producer gaps, ``done`` exactly ``groups * ceil(rows / 2) + 10`` cycles after the
  accept when every output is written.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from sim.tb import StreamSource, params, reset, to_signed
from sw.isa import REG_BITS, VMEM_BITS, Instr, Op, encode, gemv_fields, gemv_imm
from sw.isa_sim import Core, rshift

M36 = (1 << VMEM_BITS) - 1
M54 = (1 << REG_BITS) - 1
# Model-side guard: values beyond this are only ever clipped (sat <= 36) or rejected as overflow,
# so clamping the exact rescaled value here keeps int64 arithmetic without changing any result.
BIG = 1 << 62


class RefCore(Core):
    """The executor's VMEM and its GEMV output semantics, on accumulators given directly."""

    def __init__(self, vmem):  # noqa: D107 (deliberately not calling Core.__init__)
        self.vmem = np.asarray(vmem, dtype=np.int64).copy()
        self.pending = []

    def gemv_out(self, ins: Instr, acc, scale: int, shift: int) -> int:
        """``Core._gemv`` after the accumulation (``acc`` = all ``groups * rows`` outputs)."""
        _, _, raw, residual, _ = gemv_fields(ins.imm)
        n = ins.n
        sm, sh = (0, 0) if raw else (scale, shift)
        y = [int(a) if raw else rshift(int(a) * sm, sh) for a in acc[:n]]   # exact integers
        y = np.asarray([max(-BIG, min(BIG, v)) for v in y], dtype=np.int64)
        if residual:
            if ins.sat:
                lim = np.int64(1) << np.int64(ins.sat - 1)
                y = np.clip(y, -lim, lim - 1)
            y = self._vr(ins.a0, n) + y
        return self._vw(ins.a0, y, ins.sat)


class Bench:
    def __init__(self, dut):
        p = params()
        self.dut = dut
        self.rows, self.aw, self.depth = p["rows"], p["acc_width"], p["vmem_depth"]
        self.lanes = p.get("lanes", 2)
        self.ports = [(f"vmem_rd{s}", f"vmem_wr{s}") for s in [""] + [str(k + 2) for k in range(self.lanes - 1)]]
        self.amin, self.amax = -(1 << (self.aw - 1)), (1 << (self.aw - 1)) - 1
        self.mem = [0] * self.depth
        self.cmds = []          # (ins, scale, shift, acc, expected rd, expected writes)
        self.cycle = 0
        self.accepts, self.dones, self.writes, self.beats_in = [], [], [], []
        self.rds, self.reads = [], []

    # ------------------------------------------------------------ stimulus
    def fill(self, rng, values):
        for a in range(self.depth):
            self.mem[a] = int(values(rng))
        self.ref = RefCore(self.mem)

    def add(self, ins: Instr, acc, scale=0, shift=0) -> bool:
        """Queue a command if the executor accepts it; returns whether it did."""
        assert len(acc) == ins.a2 * self.rows
        assert all(self.amin <= a <= self.amax for a in acc), "accumulator beyond acc_width"
        saved = self.ref.vmem.copy()
        try:
            rd = self.ref.gemv_out(ins, acc, scale, shift)
        except (OverflowError, IndexError):
            self.ref.vmem = saved
            return False
        exp = [(ins.a0 + m, int(self.ref.vmem[ins.a0 + m])) for m in range(ins.n)]
        self.cmds.append((ins, scale, shift, list(acc), rd, exp))
        return True

    def cmd_payload(self, ins, scale, shift):
        return encode(ins) | (scale & M54) << 128 | (shift & M54) << (128 + REG_BITS)

    def beat_payload(self, accs):
        w = 0
        for r, a in enumerate(accs):
            w |= (int(a) & ((1 << self.aw) - 1)) << (r * self.aw)
        return w

    # ------------------------------------------------------------ simulation
    async def setup(self):
        d = self.dut
        d.cmd__valid.value = 0
        d.i__valid.value = 0
        for rp, _ in self.ports:
            getattr(d, f"{rp}__data").value = 0
        self.rd_addr_reg, self.bram_out = [None] * self.lanes, [0] * self.lanes
        await reset(d)

    async def monitor(self):
        """VMEM model and per-cycle protocol checks."""
        d = self.dut
        exp_busy = 0
        while True:
            await ReadOnly()
            busy = int(d.busy.value)
            assert busy == exp_busy, f"cycle {self.cycle}: busy = {busy}, expected {exp_busy}"
            assert int(d.cmd__ready.value) == 1 - busy, f"cycle {self.cycle}: cmd.ready != ~busy"
            accepted = bool(d.cmd__valid.value) and bool(d.cmd__ready.value)
            if accepted:
                self.accepts.append(self.cycle)
            if int(d.i__valid.value) and int(d.i__ready.value):
                assert busy, f"cycle {self.cycle}: beat consumed while idle"
                self.beats_in.append((len(self.dones), self.cycle))
            # One read and one write port per lane (in lane order within a cycle). Lane k is only
            # used together with lanes 0 .. k - 1, on the k-th word after lane 0's (another bank).
            rds, wrs = [], []
            for rp, wp in self.ports:
                if int(getattr(d, f"{rp}__en").value):
                    rds.append(int(getattr(d, f"{rp}__addr").value))
                else:
                    rds.append(None)
                if int(getattr(d, f"{wp}__en").value):
                    wrs.append((int(getattr(d, f"{wp}__addr").value),
                                to_signed(int(getattr(d, f"{wp}__data").value), VMEM_BITS)))
                else:
                    wrs.append(None)
            for k in range(1, self.lanes):
                for prev, cur, what in ((rds[k - 1], rds[k], "read"), (wrs[k - 1], wrs[k], "write")):
                    if cur is not None:
                        assert prev is not None, f"cycle {self.cycle}: lane {k} {what} without lane {k - 1}"
                        a0 = prev if what == "read" else prev[0]
                        a1 = cur if what == "read" else cur[0]
                        assert a1 == (a0 + 1) % (1 << len(d.vmem_wr__addr)), \
                            f"cycle {self.cycle}: lane {k} {what} at {a1}, lane {k - 1} at {a0}"
            for a in rds:
                if a is not None:
                    assert busy, f"cycle {self.cycle}: VMEM read while idle"
                    self.reads.append((len(self.dones), a))
            for w in wrs:
                if w is not None:
                    assert busy, f"cycle {self.cycle}: VMEM write while idle"
                    self.writes.append((len(self.dones), w[0], w[1], self.cycle))
            done = int(d.result__done.value)
            if done:
                assert busy, f"cycle {self.cycle}: done while idle"
                assert int(d.result__rd_we.value) == 1 and int(d.result__rc_we.value) == 0
                self.rds.append(to_signed(int(d.result__rd_data.value), REG_BITS))
                self.dones.append(self.cycle)
            exp_busy = int(accepted or (busy and not done))
            await RisingEdge(d.clk)
            self.cycle += 1
            # The core's VMEM read port (READ_LATENCY = 3): the address is registered, the block
            # RAM reads it at the end of the next cycle (before that cycle's write), its output
            # is registered once more.
            for j, (rp, _) in enumerate(self.ports):
                out = getattr(d, f"{rp}__data")
                if self.rd_addr_reg[j] is not None:
                    self.bram_out[j], out.value = self.mem[self.rd_addr_reg[j]] & M36, self.bram_out[j]
                else:
                    out.value = self.bram_out[j]
                self.rd_addr_reg[j] = None
                if rds[j] is not None:
                    assert 0 <= rds[j] < self.depth, f"VMEM read of {rds[j]} beyond {self.depth}"
                    self.rd_addr_reg[j] = rds[j]
            for w in wrs:
                if w is not None:
                    assert 0 <= w[0] < self.depth, f"VMEM write of {w[0]} beyond {self.depth}"
                    self.mem[w[0]] = w[1]

    async def run(self, p_cmd_idle: float, p_beat_idle: float, seed: int, check_rate: bool = False):
        d = self.dut
        rng = random.Random(seed)
        cocotb.start_soon(self.monitor())
        csrc = StreamSource(d, "cmd", p_idle=p_cmd_idle, rng=random.Random(rng.random()))
        bsrc = StreamSource(d, "i", p_idle=p_beat_idle, rng=random.Random(rng.random()))
        beats = [self.beat_payload(acc[g * self.rows:(g + 1) * self.rows])
                 for ins, _, _, acc, _, _ in self.cmds for g in range(ins.a2)]
        cocotb.start_soon(csrc.send([self.cmd_payload(ins, sc, sh) for ins, sc, sh, *_ in self.cmds]))
        cocotb.start_soon(bsrc.send(beats))
        total = sum(ins.a2 * (self.rows + 4) + 20 for ins, *_ in self.cmds)
        limit = int(total / (1 - max(p_cmd_idle, p_beat_idle)) * 3) + 200
        start = self.cycle
        while len(self.dones) < len(self.cmds):
            await RisingEdge(d.clk)
            assert self.cycle - start < limit, f"timed out: {len(self.dones)} of {len(self.cmds)} commands done"
        for _ in range(12):     # nothing after the last done
            await RisingEdge(d.clk)
        self.check(check_rate)

    def check(self, check_rate: bool):
        assert len(self.accepts) == len(self.cmds) == len(self.dones)
        for j, (ins, sc, sh, acc, rd, exp) in enumerate(self.cmds):
            what = f"command {j} ({ins}, scale {sc}, shift {sh})"
            assert self.accepts[j] < self.dones[j], f"{what}: done before accept"
            if j + 1 < len(self.cmds):
                assert self.accepts[j + 1] > self.dones[j], f"{what}: next command accepted while busy"
            nb = [c for k, c in self.beats_in if k == j and self.accepts[j] < c <= self.dones[j]]
            assert len(nb) == ins.a2, f"{what}: {len(nb)} beats consumed, groups = {ins.a2}"
            got = [(a, v) for k, a, v, c in self.writes if k == j]
            assert len(got) == len(exp), f"{what}: {len(got)} writes, expected {len(exp)}"
            for m, (g, e) in enumerate(zip(got, exp)):
                assert g == e, (f"{what}: output {m} (acc {acc[m]}): wrote x[{g[0]}] = {g[1]}, "
                                f"executor x[{e[0]}] = {e[1]}")
            reads = [a for k, a in self.reads if k == j]
            exp_reads = [a for a, _ in exp] if gemv_fields(ins.imm).residual else []
            assert reads == exp_reads, f"{what}: VMEM reads {reads}, expected {exp_reads}"
            assert self.rds[j] == rd, f"{what}: rd = {self.rds[j]}, executor max|written| = {rd}"
            cyc = self.dones[j] - self.accepts[j]
            per_beat = -(-self.rows // self.lanes)   # lanes outputs per cycle
            fixed = 10 + (self.lanes > 2)             # (four lanes: one more stage for the maximum)
            if check_rate and ins.n == ins.a2 * self.rows:
                assert cyc == ins.a2 * per_beat + fixed, f"{what}: {cyc} cycles accept to done"
            if check_rate:
                assert cyc <= ins.a2 * per_beat + fixed, f"{what}: {cyc} cycles accept to done"
        assert len(self.writes) == sum(len(c[5]) for c in self.cmds)
        exp_mem = [int(v) for v in self.ref.vmem]
        bad = [a for a in range(self.depth) if self.mem[a] != exp_mem[a]]
        assert not bad, f"VMEM differs at {len(bad)} words, first x[{bad[0]}] = {self.mem[bad[0]]}, " \
                        f"executor {exp_mem[bad[0]]}"
        self.dut._log.info(f"{len(self.cmds)} commands, {len(self.writes)} writes, {self.cycle} cycles")


# ---------------------------------------------------------------- command generation
SATS = [0, 18, 32, 36]
# (the executor's rshift builds x << -s: negative shifts stay small)
SHIFTS = [-4095, -40, -39, -38, -37, -36, -20, -5, -1, 0, 1, 2, 16, 17, 23, 40, 56, 57, 58, 59, 60, 70,
          200, (1 << 53) - 1]
SCALES = [0, 1, (1 << 17) - 1, 1 << 16, 3, -1, -(1 << 17), (1 << 17) - 2]


def vmem_values(rng):
    c = rng.random()
    if c < 0.3:
        return rng.randrange(-(1 << 35), 1 << 35)
    if c < 0.5:
        return rng.choice([-(1 << 35), (1 << 35) - 1, 0, 1, -1])
    if c < 0.8:
        s = rng.choice([18, 32, 36])
        return rng.choice([1, -1]) * (1 << (s - 1)) - rng.randrange(-4, 5) if s < 36 else rng.randrange(-(1 << 35), 1 << 35)
    return rng.randrange(-1000, 1000)


class Gen:
    def __init__(self, bench: Bench, rng: random.Random):
        self.b, self.rng = bench, rng

    def acc(self, count, kind=None):
        b, rng = self.b, self.rng
        out = []
        for _ in range(count):
            c = rng.random() if kind is None else kind
            if c < 0.15:
                out.append(rng.choice([b.amin, b.amax, b.amin + 1, b.amax - 1]))
            elif c < 0.3:
                out.append(rng.randrange(-8, 9))
            elif c < 0.45:   # rounding ties at small shifts: odd multiples of powers of two
                k = rng.randrange(0, min(16, b.aw - 2))
                v = (2 * rng.randrange(0, 1 << max(1, b.aw - 3 - k)) + 1) << k
                out.append(max(b.amin, min(b.amax, rng.choice([v, -v]))))
            else:
                out.append(rng.randrange(b.amin, b.amax + 1))
        return out

    def one(self, mode=None, sat=None, n=None, groups=None, scale=None, shift=None, acc=None, tries=200):
        b, rng = self.b, self.rng
        for _ in range(tries):
            g = groups if groups is not None else rng.choice([1, 1, 2, 3, 5, rng.randrange(1, 9)])
            nmax = g * b.rows
            nn = n if n is not None else rng.choice([nmax, nmax, nmax - 1, 0, rng.randrange(0, nmax + 1),
                                                     max(0, nmax - b.rows - 1)])
            nn = max(0, min(nn, nmax))
            md = mode if mode is not None else rng.choice(["scaled", "scaled", "raw", "residual"])
            st = sat if sat is not None else rng.choice(SATS + [rng.randrange(1, 37)])
            sc = scale if scale is not None else (rng.choice(SCALES) if rng.random() < 0.4
                                                  else rng.randrange(0, 1 << 17))
            sh = shift if shift is not None else (rng.choice(SHIFTS) if rng.random() < 0.5
                                                  else rng.randrange(-8, 45))
            a0 = rng.randrange(0, b.depth - nn + 1)
            imm = gemv_imm(rng.randrange(1, 100), rng.randrange(2), raw=md == "raw", residual=md == "residual",
                           chain=rng.random() < 0.5)
            ins = Instr(Op.GEMV, sat=st, rd=rng.randrange(32), ra=rng.randrange(32), rb=rng.randrange(32),
                        n=nn, a0=a0, a1=rng.randrange(1 << 20), a2=g, imm=imm)
            accs = acc if acc is not None else self.acc(nmax)
            if md == "raw":   # the registers are not used: random values
                sc, sh = rng.randrange(-(1 << 53), 1 << 53), rng.randrange(-(1 << 53), 1 << 53)
            if b.add(ins, accs, sc, sh):
                return True
        return False


def edge_commands(gen: Gen):
    b = gen.b
    R = b.rows
    ext = [b.amax, b.amin, b.amax - 1, b.amin + 1, 0, 1, -1]
    # residual saturating both ways: destination at the limits, large outputs of either sign
    # (first: the testbench's VMEM is the initial state of the whole sequence)
    assert not b.cmds
    for j, st in enumerate((18, 32, 36)):
        lim = 1 << (st - 1)
        a0 = j * 2 * R
        for k in range(2 * R):
            v = [lim - 1, -lim, lim - 3, -lim + 3][k % 4]
            b.mem[a0 + k] = v
            b.ref.vmem[a0 + k] = v
        accs = [b.amax, b.amin, b.amax, b.amin] * (R // 2 + 1)
        accs = (accs * 2)[:2 * R]
        ins = Instr(Op.GEMV, sat=st, rd=3, n=2 * R, a0=a0, a2=2, imm=gemv_imm(6, 1, residual=True))
        assert b.add(ins, accs, (1 << 17) - 1, 1)
        assert b.add(ins, accs, (1 << 17) - 1, -4)
        assert b.add(ins, [b.amin if a == b.amax else b.amax for a in accs], (1 << 17) - 1, 0)
    edge_acc = (ext * (3 * R))[:3 * R]
    # every scaled combination of the listed shifts, scales and sats on the extreme accumulators;
    # around the product width P = acc_width + 18 (|acc * scale| <= 2**(P - 2): 1 at shift P - 1)
    P = b.aw + 18
    for sh in SHIFTS + [P - 2, P - 1, P, P + 1, P + 2]:
        for sc in [0, (1 << 17) - 1, 1, -(1 << 17)]:
            for st in SATS:
                gen.one(mode="scaled", sat=st, groups=3, n=3 * R, scale=sc, shift=sh, acc=edge_acc, tries=1)
                gen.one(mode="residual", sat=st, groups=3, n=3 * R - 1, scale=sc, shift=sh, acc=edge_acc, tries=1)
    for st in SATS + [1, 2, 17]:
        gen.one(mode="raw", sat=st, groups=3, n=3 * R, acc=edge_acc)
    # n = 0, groups = 1, n < groups * rows (whole beats dropped), n not a multiple of rows
    assert gen.one(mode="scaled", n=0, groups=4, sat=0, scale=5, shift=3)
    assert gen.one(mode="residual", n=0, groups=1, sat=18, scale=5, shift=3)
    assert gen.one(mode="scaled", n=1, groups=1, sat=18)
    assert gen.one(mode="scaled", n=R, groups=1, sat=32)
    assert gen.one(mode="raw", n=R + 1, groups=6, sat=0)
    assert gen.one(mode="residual", n=2 * R - 1, groups=5, sat=36)
    # ties at every shift 1..40 with scale 1
    for s in range(1, 41):
        accs = []
        for k in range(R):
            base = 1 << (s - 1) if s - 1 < b.aw - 2 else 0
            odd = (2 * k + 1) * base
            accs.append(max(b.amin, min(b.amax, odd if k % 2 else -odd)))
        gen.one(mode="scaled", sat=0, groups=1, n=R, scale=1, shift=s, acc=accs)


async def start(dut, seed):
    b = Bench(dut)
    rng = random.Random(seed)
    b.fill(rng, vmem_values)
    await b.setup()
    return b, Gen(b, rng)


@cocotb.test()
async def test_edges(dut):
    b, gen = await start(dut, 1)
    edge_commands(gen)
    await b.run(p_cmd_idle=0.0, p_beat_idle=0.0, seed=1)


@cocotb.test()
async def test_edges_gaps(dut):
    b, gen = await start(dut, 2)
    edge_commands(gen)
    await b.run(p_cmd_idle=0.3, p_beat_idle=0.5, seed=2)


@cocotb.test()
async def test_random_back_to_back(dut):
    b, gen = await start(dut, 3)
    while len(b.cmds) < 300:
        gen.one()
    await b.run(p_cmd_idle=0.0, p_beat_idle=0.0, seed=3, check_rate=True)


@cocotb.test()
async def test_random_gaps(dut):
    b, gen = await start(dut, 4)
    while len(b.cmds) < 250:
        gen.one()
    await b.run(p_cmd_idle=0.2, p_beat_idle=0.6, seed=4)


@cocotb.test()
async def test_throughput(dut):
    """Full-length commands with the beats always offered: two outputs per cycle."""
    b, gen = await start(dut, 5)
    for g in (1, 2, 7, 16):
        for md in ("scaled", "residual", "raw"):
            assert gen.one(mode=md, groups=g, n=g * b.rows, sat=32, scale=(1 << 17) - 1, shift=30)
    await b.run(p_cmd_idle=0.0, p_beat_idle=0.0, seed=5, check_rate=True)
    cyc = [d - a for a, d in zip(b.accepts, b.dones)]
    dut._log.info(f"accept-to-done cycles: {cyc}")
