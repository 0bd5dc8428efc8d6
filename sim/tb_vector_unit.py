"""cocotb testbench: VectorUnit against the instruction-level executor ``sw.isa_sim.Core``.

:class:`VectorUnitHarness` puts the unit between real memories (VMEM, CMEM, SIGMEM and the two
activation banks), each with an extra port for the testbench, and counts the unit's VMEM and
activation writes. The reference is :class:`ModelCore`, an ``sw.isa_sim.Core`` whose memories
mirror the harness's: every instruction is first executed by ``Core._vector`` (instructions the
executor rejects are not sent), then by the unit. For every instruction the testbench checks:

* ``rd`` / ``rc``: written exactly when the executor writes them, with its values;
* VMEM: the destination range read back, and the number of words the unit wrote (``n`` for the
  writing opcodes, 0 otherwise); the whole VMEM at the end of every test;
* the activation memory (both banks, every code) after every ``VQ``;
* timing: ``busy`` from the cycle after the accept to the ``done`` cycle, ``done`` in cycle
  ``t + OVERHEAD + (n - 1) * INTERVAL[op] + ELEMENT_CYCLES[op]`` (``t + 1`` for ``n = 0`` and
  non-vector opcodes), :func:`hw.core.vector_unit.cycles`.

Inputs: the vector instructions of the shipped model's token program with the register values and
memory contents the executor had at each (captured with a hook), and directed and random cases:
zeros, ``n`` = 0, 1 and the maximum, saturation widths, negative / zero / huge shifts, sigmoid
inputs at and beyond the table's clamp for F = 6, 16 and > 16, argmax ties, codes at +-127.

Shift amount 64 is not sent to the array operations: ``sw.isa_sim.rshift``'s numpy path builds
``1 << 63`` there and returns +-1 instead of 0 (its scalar path, and the unit, give 0).
"""

import random
from pathlib import Path

import cocotb
import numpy as np
from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer

from hw.core.ports import UNIT_CMD_LAYOUT, BankedMemory, MemReadSignature, MemWriteSignature, UnitResultSignature
from hw.core.vector_unit import (CMEM_BANKS, CMEM_PORT_REACH, ELEMENT_CYCLES, INTERVAL, OVERHEAD, GROUPED,
                                 WIDE_ELEMENT_CYCLES, WIDE_LANES, VREC_S_LAG, VectorUnit, cycles, path)
from sim.tb import params, reset, to_signed
from sw.isa import REG_BITS, VECTOR_OPS, Instr, Op, encode
from sw.isa_sim import Core

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models" / "checkpoints" / "mmfree-tiny.safetensors"
PERIOD = 10
MASK = (1 << REG_BITS) - 1
WRITES_VMEM = {Op.VSET, Op.VEMB, Op.VADD, Op.VREC, Op.VGLU}


class VectorUnitHarness(wiring.Component):
    """The unit on real memories, with testbench ports ``vm_w``, ``vm_r``, ``cm_w``, ``sg_w``,
    ``am_w``, ``am_r`` and counters of the unit's VMEM word writes and activation code writes."""

    def __init__(self, **kw):
        self.unit = u = VectorUnit(**kw)
        self.kw = kw
        super().__init__({
            "cmd": In(stream.Signature(UNIT_CMD_LAYOUT)),
            "result": Out(UnitResultSignature()),
            "busy": Out(1),
            "vm_w": In(MemWriteSignature(u.vaw, signed(36))),
            "vm_r": In(MemReadSignature(u.vaw, signed(36))),
            "cm_w": In(MemWriteSignature(u.caw, signed(18))),
            "sg_w": In(MemWriteSignature(u.saw, unsigned(18))),
            "am_w": In(MemWriteSignature(u.aaw, unsigned(8 * u.lanes), u.lanes)),
            "am_r": In(MemReadSignature(u.aaw, unsigned(8 * u.lanes))),
            "n_vw": Out(32),
            "n_aw": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit = u
        wiring.connect(m, wiring.flipped(self.cmd), u.cmd)
        m.d.comb += [self.result.done.eq(u.result.done), self.result.rd_we.eq(u.result.rd_we),
                     self.result.rd_data.eq(u.result.rd_data), self.result.rc_we.eq(u.result.rc_we),
                     self.result.rc_data.eq(u.result.rc_data), self.busy.eq(u.busy)]

        def wr(mem, port, granularity=None):
            p = mem.write_port(granularity=granularity)
            m.d.comb += [p.addr.eq(port.addr), p.data.eq(port.data), p.en.eq(port.en)]

        m.submodules.vmem = vmem = memory.Memory(shape=signed(36), depth=u.vmem_depth, init=[])
        m.submodules.amem = amem = memory.Memory(shape=unsigned(8 * u.lanes), depth=2 * u.chunks_max, init=[])
        # VMEM as in the core: four banks by address modulo 4 with registered ports, the unit's four
        # read ports and two write ports; a plain copy, written alike, serves the testbench's reads
        vb = BankedMemory(m, "vmemb", signed(36), u.vmem_depth, 4)
        ports = [u.vmem_rd, u.vmem_rd2, u.vmem_rd3, u.vmem_rd4]
        for p, d in zip(ports, vb.read([(p.addr, p.en) for p in ports])):
            m.d.comb += p.data.eq(d)
        vb.write([(w.addr, w.data, w.en) for w in (u.vmem_wr, u.vmem_wr2, self.vm_w)])
        q = vmem.read_port()
        m.d.comb += [q.addr.eq(self.vm_r.addr), q.en.eq(self.vm_r.en), self.vm_r.data.eq(q.data)]
        wr(vmem, u.vmem_wr)
        wr(vmem, u.vmem_wr2)
        wr(vmem, self.vm_w)
        # CMEM as in the core: eight banks by address modulo 8, the unit's eight read ports, each
        # wired to the banks it may address (a read outside them reads a wrong word: caught here)
        cmem = BankedMemory(m, "cmem", signed(18), u.cmem_depth, CMEM_BANKS)
        ports = [getattr(u, f"cmem_rd{k}") for k in ("", "2", "3", "4", "5", "6", "7", "8")]
        for p, d in zip(ports, cmem.read([(p.addr, p.en, r) for p, r in zip(ports, CMEM_PORT_REACH)])):
            m.d.comb += p.data.eq(d)
        cmem.write([(self.cm_w.addr, self.cm_w.data, self.cm_w.en)])
        # SIGMEM as in the core: two copies of two banks, ports 1, 2 on the first, 3, 4 on the second
        for c, ports in enumerate(((u.sig_rd, u.sig_rd2), (u.sig_rd3, u.sig_rd4))):
            smem_b = BankedMemory(m, f"smemb{c}", unsigned(18), u.sig_depth)
            for p, d in zip(ports, smem_b.read([(p.addr, p.en) for p in ports])):
                m.d.comb += p.data.eq(d)
            smem_b.write([(self.sg_w.addr, self.sg_w.data, self.sg_w.en)])
        wr(amem, u.a_wr, 8)
        wr(amem, self.am_w, 8)
        q = amem.read_port()        # the testbench's own port: data in the cycle after en
        m.d.comb += [q.addr.eq(self.am_r.addr), q.en.eq(self.am_r.en), self.am_r.data.eq(q.data)]
        n_vw, n_aw = Signal(32), Signal(32)
        m.d.sync += n_vw.eq(n_vw + u.vmem_wr.en + u.vmem_wr2.en)
        with m.If(u.a_wr.en.any()):
            m.d.sync += n_aw.eq(n_aw + 1)
        m.d.comb += [self.n_vw.eq(n_vw), self.n_aw.eq(n_aw)]
        return m


# ---------------------------------------------------------------------------- reference
class ModelCore(Core):
    """The executor on bare memories (no compiled model); logs every register write."""

    def __init__(self, vmem_depth, cmem_depth, sigmem, k_max):  # noqa: D107 (not calling Core.__init__)
        self.vmem = np.zeros(vmem_depth, np.int64)
        self.cmem = np.zeros(cmem_depth, np.int64)
        self.sigmem = np.asarray(sigmem, np.int64).copy()
        self.k_max = k_max
        self.amem = np.zeros((2, k_max), np.int64)
        self.regs = [0] * 32
        self.pending = []
        self.log = []

    def _w(self, i, v):
        self.log.append((i, int(v)))
        super()._w(i, v)


class Bench:
    """The harness (through ``dut``) and its mirror ``ModelCore``; memory loads keep both equal."""

    def __init__(self, dut, p):
        self.dut = dut
        self.vdepth, self.cdepth, self.sdepth = p["vmem_depth"], p["cmem_depth"], p["sig_depth"]
        self.lanes, self.chunks = p["lanes"], p["chunks_max"]
        from models.fixedpoint import sigmoid_table
        self.m = ModelCore(self.vdepth, self.cdepth, sigmoid_table(), self.lanes * self.chunks)
        self.stats = {}       # op -> list of (n, cycles)
        self.sent = 0

    async def start(self):
        d = self.dut
        for name in ("cmd__valid", "vm_w__en", "vm_r__en", "cm_w__en", "sg_w__en", "am_w__en", "am_r__en"):
            getattr(d, name).value = 0
        await reset(d, PERIOD)
        await self._write("sg_w", 0, self.m.sigmem)

    async def _write(self, port, addr, values, mask=None):
        d = self.dut
        a_sig, d_sig, e_sig = (getattr(d, f"{port}__{k}") for k in ("addr", "data", "en"))
        await FallingEdge(d.clk)
        for k, v in enumerate(values):
            a_sig.value = addr + k
            d_sig.value = int(v) & ((1 << len(d_sig)) - 1)
            e_sig.value = (1 << len(e_sig)) - 1 if mask is None else mask
            await FallingEdge(d.clk)
        e_sig.value = 0

    async def _read(self, port, addrs):
        d = self.dut
        a_sig, e_sig, d_sig = (getattr(d, f"{port}__{k}") for k in ("addr", "en", "data"))
        out = []
        await FallingEdge(d.clk)
        for k, a in enumerate(addrs):
            a_sig.value, e_sig.value = a, 1
            await FallingEdge(d.clk)
            out.append(int(d_sig.value))
        e_sig.value = 0
        return out

    async def put_vmem(self, addr, values):
        values = np.asarray(values, np.int64)
        self.m.vmem[addr:addr + values.size] = values
        await self._write("vm_w", addr, values)

    async def put_cmem(self, addr, values):
        values = np.asarray(values, np.int64)
        self.m.cmem[addr:addr + values.size] = values
        await self._write("cm_w", addr, values)

    async def sync_vmem(self, image):
        """Write the words of ``image`` that differ from the model's VMEM (runs of them)."""
        image = np.asarray(image, np.int64)
        diff = np.flatnonzero(self.m.vmem[:image.size] != image)
        k = 0
        while k < diff.size:
            e = k
            while e + 1 < diff.size and diff[e + 1] == diff[e] + 1:
                e += 1
            await self.put_vmem(int(diff[k]), image[diff[k]:diff[e] + 1])
            k = e + 1

    async def put_amem(self, codes):
        """Load both activation banks (codes: 2 x k_max int8 values)."""
        codes = np.asarray(codes, np.int64).reshape(2, -1)
        self.m.amem[:] = codes
        words = [sum((int(c) & 0xFF) << (8 * ln) for ln, c in enumerate(row[w * self.lanes:(w + 1) * self.lanes]))
                 for row in codes for w in range(self.chunks)]
        await self._write("am_w", 0, words)

    async def read_vmem(self, addr, n):
        return [to_signed(v, 36) for v in await self._read("vm_r", [(addr + k) % self.vdepth for k in range(n)])]

    async def read_amem(self):
        words = await self._read("am_r", range(2 * self.chunks))
        codes = [to_signed((w >> (8 * ln)) & 0xFF, 8) for w in words for ln in range(self.lanes)]
        return np.asarray(codes, np.int64).reshape(2, -1)

    async def check_all_vmem(self):
        got = np.asarray(await self.read_vmem(0, self.vdepth), np.int64)
        bad = np.flatnonzero(got != self.m.vmem)
        assert bad.size == 0, \
            f"VMEM differs at {bad.size} words, first {bad[0]}: {got[bad[0]]} != {self.m.vmem[bad[0]]}"

    async def run(self, ins: Instr, ra=0, rb=0, rc=0, check=True) -> bool:
        """Execute ``ins`` with R[ra], R[rb], R[rc] = the given values (registers 0 read 0) on the
        executor, then on the unit, and compare. Returns False (nothing sent) if the executor
        rejects it."""
        m, d = self.m, self.dut
        vals = {ins.ra: ra, ins.rb: rb, ins.rc: rc}
        saved = (m.vmem.copy(), m.amem.copy(), list(m.regs))
        for r, v in vals.items():
            if r:
                m.regs[r] = v
        regv = [m.regs[r] if r else 0 for r in (ins.ra, ins.rb, ins.rc)]
        m.log = []
        try:
            if ins.op in VECTOR_OPS:
                m._vector(ins)
        except (ValueError, OverflowError, IndexError):
            m.vmem[:], m.amem[:], m.regs = saved[0], saved[1], saved[2]
            return False
        log = list(m.log)
        payload = encode(ins) | (regv[0] & MASK) << 128 | (regv[1] & MASK) << 182 | (regv[2] & MASK) << 236
        nvw0, naw0 = int(d.n_vw.value), int(d.n_aw.value)
        await FallingEdge(d.clk)
        d.cmd__valid.value, d.cmd__payload.value = 1, payload
        await ReadOnly()
        assert d.cmd__ready.value == 1 and d.busy.value == 0, "unit not idle"
        await RisingEdge(d.clk)
        t_acc = get_sim_time("ns")
        await ReadOnly()
        assert d.busy.value == 1, "busy not high in the cycle after the accept"
        if not d.result__done.value:
            await FallingEdge(d.clk)
            d.cmd__valid.value = 0
            res = await First(RisingEdge(d.result__done), Timer(PERIOD * (40 * ins.n + 100), "ns"))
            assert res is not None and d.result__done.value == 1, f"{ins}: no done"
            await ReadOnly()
        lat = round((get_sim_time("ns") - t_acc) / PERIOD) + 1
        assert d.busy.value == 1, "busy low in the done cycle"
        rd_we, rc_we = int(d.result__rd_we.value), int(d.result__rc_we.value)
        rd_v = to_signed(int(d.result__rd_data.value), REG_BITS)
        rc_v = to_signed(int(d.result__rc_data.value), REG_BITS)
        await FallingEdge(d.clk)
        d.cmd__valid.value = 0
        await RisingEdge(d.clk)
        await ReadOnly()
        assert d.busy.value == 0 and d.result__done.value == 0, "busy / done after the done cycle"
        nvw, naw = int(d.n_vw.value) - nvw0, int(d.n_aw.value) - naw0
        # ---- results
        exp_rd = [v for r, v in log[:1]] if log and log[0][0] == ins.rd else []
        exp_rc = [v for r, v in log[1:2]]
        assert rd_we == bool(exp_rd), f"{ins}: rd_we {rd_we}, executor writes {log}"
        if exp_rd:
            assert rd_v == exp_rd[0], f"{ins}: rd = {rd_v}, executor {exp_rd[0]}"
        assert rc_we == bool(exp_rc), f"{ins}: rc_we {rc_we}, executor writes {log}"
        if exp_rc:
            assert rc_v == exp_rc[0], f"{ins}: rc = {rc_v}, executor {exp_rc[0]}"
        vec = ins.op in ELEMENT_CYCLES and ins.n > 0
        pth = path(ins.op, ins.a0, ins.a1, ins.a2)
        want = cycles(ins.op, ins.n, pth)
        assert lat == want, f"{ins}: done after {lat} cycles, expected {want}"
        assert nvw == (ins.n if ins.op in WRITES_VMEM else 0), f"{ins}: {nvw} VMEM writes"
        if ins.op == Op.VQ:     # four codes per write on the wide path, one on the slow one
            assert naw == ((ins.n + 3) // 4 if pth == "wide" else ins.n), f"{ins} ({pth}): {naw} activation writes"
        else:
            assert naw == 0, f"{ins}: {naw} activation writes"
        if vec:
            g = GROUPED.get(ins.op, WIDE_LANES[ins.op] if pth == "wide" and ins.op in WIDE_LANES else 1)
            elems = (ins.n + g - 1) // g      # loop elements (groups or pairs on the wide paths)
            self.stats.setdefault((ins.op, pth), []).append((elems, lat))
        if check and ins.op in WRITES_VMEM and ins.n:
            got = np.asarray(await self.read_vmem(ins.a0, ins.n), np.int64)
            exp = m.vmem[ins.a0:ins.a0 + ins.n]
            bad = np.flatnonzero(got != exp)
            assert bad.size == 0, (f"{ins} (R = {regv}): x[{ins.a0 + bad[0]}] = {got[bad[0]]}, executor "
                                   f"{exp[bad[0]]} ({bad.size} words differ)")
        if check and ins.op == Op.VQ:
            got = await self.read_amem()
            bad = np.argwhere(got != m.amem)
            assert bad.size == 0, (f"{ins} (R = {regv}): code {tuple(bad[0])} = {got[tuple(bad[0])]}, "
                                   f"executor {m.amem[tuple(bad[0])]}")
        self.sent += 1
        return True

    def report(self):
        """Measured cycles: per element (the slope between the shortest and the longest instruction
        of each opcode) and the rest (fixed overhead + pipeline depth)."""
        for (op, pth), v in sorted(self.stats.items()):
            if pth == "wide" and op in WIDE_ELEMENT_CYCLES:
                ii, depth = 1, WIDE_ELEMENT_CYCLES[op]
            else:
                ii, depth = INTERVAL[op], ELEMENT_CYCLES[op]
            (n0, c0), (n1, c1) = min(v), max(v)
            per = (c1 - c0) / (n1 - n0) if n1 > n0 else float(ii)
            fixed = c1 - per * n1
            self.dut._log.info(f"{op.name:8s} {pth:4s} {len(v):4d} instructions, n {n0}..{n1}: "
                               f"{per:g} cycles per element + {fixed:g} (overhead {OVERHEAD} + depth {depth} - interval)")
            assert per == ii and fixed == OVERHEAD + depth - ii
            assert per <= 4 and fixed <= 48, f"{op.name}: slower than the bound of docs/core.md (4 cycles per element, 48 fixed)"


async def bench(dut) -> Bench:
    b = Bench(dut, params())
    await b.start()
    return b


# ---------------------------------------------------------------------------- data
X35 = (1 << 35) - 1


def vec(rng, n, bits, edge=0.1):
    """n random signed values of at most ``bits`` bits, with extremes and zeros mixed in."""
    lim = (1 << (bits - 1)) - 1
    ex = [0, 1, -1, lim, -lim - 1, lim - 1, -lim]
    return np.asarray([rng.choice(ex) if rng.random() < edge else rng.randint(-lim - 1, lim) for _ in range(n)],
                      np.int64)


def ins_(op, **kw):
    base = dict(rd=6, ra=3, rb=4, rc=5)
    base.update(kw)
    return Instr(op, **base)


def span(rng, n, depth):
    return rng.randrange(0, depth - n + 1)


# ---------------------------------------------------------------------------- tests
@cocotb.test()
async def test_shipped_program(dut):
    """Every vector instruction of two tokens of the shipped model, in the executor's state."""
    from models.checkpoint import load_checkpoint
    from models.intref import IntRefModel
    from sw.program import compile_model
    b = await bench(dut)
    lanes, chunks = b.lanes, b.chunks
    cm = compile_model(IntRefModel(load_checkpoint(SHIPPED)), lanes, 8)
    assert len(cm.cmem) <= b.cdepth and cm.vmem_words <= b.vdepth
    assert np.array_equal(cm.sigmem, b.m.sigmem)
    core = Core(cm)
    assert core.k_max == lanes * chunks
    cases = []
    prev = {}

    def hook(c, pc, ins, cycles):
        if pc == 0:   # a program starts with the registers cleared and the token in r1
            prev["regs"] = [0] * 32
            prev["regs"][1] = c.regs[1]
        if ins.op in VECTOR_OPS:
            cases.append((ins, prev["regs"], prev["vmem"], prev["amem"], c.vmem.copy(), c.amem.copy(), list(c.regs)))
        prev.update(regs=list(c.regs), vmem=c.vmem.copy(), amem=c.amem.copy())

    core.hook = hook
    prev.update(regs=[0] * 32, vmem=core.vmem.copy(), amem=core.amem.copy())
    core.reset()
    core.step(1)
    core.step(17)
    await b.put_cmem(0, cm.cmem)
    ops = set()
    for ins, regs, vm, am, vm_after, am_after, regs_after in cases:
        await b.sync_vmem(vm)
        if not np.array_equal(b.m.amem, am):
            await b.put_amem(am)
        b.m.regs = list(regs)
        r = [regs[k] if k else 0 for k in (ins.ra, ins.rb, ins.rc)]
        assert await b.run(ins, *r), f"the executor rejects {ins}"
        assert np.array_equal(b.m.vmem[:vm_after.size], vm_after) and np.array_equal(b.m.amem, am_after)
        ops.add(ins.op)
    await b.check_all_vmem()
    dut._log.info(f"{len(cases)} instructions of the shipped program; opcodes {sorted(o.name for o in ops)}")
    b.report()


@cocotb.test()
async def test_simple_ops(dut):
    """VSET, VEMB, VADD, VMAXABS, VARGMAX: edges, saturation, n = 0 / 1 / maximum, ties."""
    b = await bench(dut)
    rng = random.Random(11)
    D = b.vdepth
    await b.put_cmem(0, vec(rng, 4096, 18, 0.2))
    await b.put_vmem(0, vec(rng, D, 36, 0.2))
    # VSET
    for n in (0, 1, 7, D):
        for imm in (0, -1, (1 << 19) - 1, -(1 << 19), rng.randrange(-(1 << 19), 1 << 19)):
            for sat in (0, 1, 2, 8, 19, 36):
                if n == D and rng.random() < 0.8:
                    continue
                await b.run(ins_(Op.VSET, n=n, a0=span(rng, n, D), imm=imm, sat=sat))
    # VEMB: shifts 0..45, saturation (the executor rejects what exceeds 36 bits unsaturated)
    for k in range(60):
        n = rng.choice([0, 1, 5, 33, 200, 1000])
        await b.run(ins_(Op.VEMB, n=n, a0=span(rng, n, D), sat=rng.choice([0, 0, 36, 32, 20, 1, 2])),
                    ra=rng.randrange(0, 4096 - n + 1), rb=rng.choice([0, 1, 17, 18, 30, 45, rng.randrange(46)]))
    # VADD: extremes, in place, saturation
    for k in range(60):
        n = rng.choice([0, 1, 3, 64, 500])
        a1, a2 = span(rng, n, D), span(rng, n, D)
        bits = rng.choice([36, 35, 20, 2])
        await b.put_vmem(a1, vec(rng, n, bits, 0.3))
        if rng.random() < 0.5:
            await b.put_vmem(a2, vec(rng, n, bits, 0.3))
        a0 = rng.choice([a1, a2, span(rng, n, D)])
        if a1 < a0 < a1 + n or a2 < a0 < a2 + n:
            a0 = min(a1, a2)   # the destination behind both sources
        await b.run(ins_(Op.VADD, n=n, a0=a0, a1=a1, a2=a2, sat=rng.choice([0, 36, 36, 24, 1])))
    await b.put_vmem(0, vec(rng, D, 36, 0.2))
    await b.run(ins_(Op.VADD, n=D, a0=0, a1=0, a2=0, sat=36))
    await b.run(ins_(Op.VADD, n=D, a0=0, a1=0, a2=0, sat=0))
    # VMAXABS / VARGMAX: extremes, ties, all equal, negative only
    for k in range(40):
        n = rng.choice([0, 1, 2, 17, 300])
        a1 = span(rng, n, D)
        kind = k % 5
        if kind == 0:
            v = vec(rng, n, 36, 0.3)
        elif kind == 1:
            v = np.full(n, rng.choice([0, -1, X35, -X35 - 1]), np.int64)
        elif kind == 2:
            v = np.asarray([rng.choice([-5, 3, 3, 7, -(1 << 35)]) for _ in range(n)], np.int64)
        elif kind == 3:
            v = -np.abs(vec(rng, n, 20)) - 1
        else:
            v = vec(rng, n, 4)
        await b.put_vmem(a1, v)
        await b.run(ins_(Op.VMAXABS, n=n, a1=a1))
        await b.run(ins_(Op.VARGMAX, n=n, a1=a1))
    await b.put_vmem(0, vec(rng, D, 36, 0.3))
    await b.run(ins_(Op.VMAXABS, n=D, a1=0))
    await b.run(ins_(Op.VARGMAX, n=D, a1=0))
    # other opcodes: done at once, no writes
    for op in (Op.NOP, Op.HALT, Op.SYNC, Op.SADD, Op.SRSQ, Op.GEMV):
        await b.run(Instr(op, n=5, a0=1, rd=6, rc=7))
    await b.run(Instr(Op.VSET, n=0, a0=1, imm=5))
    await b.check_all_vmem()
    b.report()


SHIFTS_Z = (0, 1, -3, 17, 18, 19, 20, 36, 37, 63, 65, 100, 1 << 40, -(1 << 40))


@cocotb.test()
async def test_nqa_umax_q(dut):
    """VNQA, VUMAX2, VQ: z' shifts of every kind, rc = 0 / not 0, codes clamping, both banks."""
    b = await bench(dut)
    rng = random.Random(12)
    D, K = b.vdepth, b.lanes * b.chunks
    await b.put_cmem(0, vec(rng, 8192, 18, 0.2))
    await b.put_amem(vec(rng, 2 * K, 8))
    for k in range(120):
        op = (Op.VNQA, Op.VUMAX2, Op.VQ)[k % 3]
        n = rng.choice([v for v in (0, 1, 2, 31, 32, 33, 100, K - 1, K) if v <= K] if op == Op.VQ
                       else [0, 1, 2, 3, 50, 51, 300])
        a1 = span(rng, n, D)
        sz = rng.choice(SHIFTS_Z)
        bits = 36 if sz >= 18 else 18 if sz >= 0 else 12
        if sz > (1 << 20) or sz < -(1 << 20):
            bits = 36 if sz > 0 else 1
        await b.put_vmem(a1, vec(rng, n, bits, 0.2))
        a2 = rng.randrange(0, 8192 - n + 1)
        mode = (k // 3) % 4
        if mode == 0:
            a2 -= a2 % 4        # the lanes' CMEM ports reach their banks: the four-lane paths
        elif mode == 1 and a2 % 4 == 0:
            a2 += 1 if a2 + n < 8192 else -1     # they do not: the slow paths
        if op == Op.VQ:
            t = rng.choice([-2, 0, 1, 16, 17, 20, 34, 40, 70, 1 << 30])
            rq = rng.choice([0, 1, 65495, 128674, (1 << 17) - 1, -(1 << 17), (1 << 18) - 1, rng.randrange(1 << 17)])
            ok = await b.run(ins_(Op.VQ, n=n, a0=k % 2, a1=a1, a2=a2), ra=rq, rb=sz, rc=t)
        else:
            # C[a0] 4 words after C[a2] modulo 8 (the wide path when a2 = 0 modulo 4), an odd
            # number, 0, 2 or 6 (the slow path)
            a0 = rng.randrange(0, 8192 - n + 1 - 7)
            a0 += (a2 + (4, 4, rng.choice([1, 3, 5, 7]), rng.choice([0, 2, 6]))[mode] - a0) % 8
            ok = await b.run(ins_(op, n=n, a0=a0, a1=a1, a2=a2, rc=rng.choice([0, 7])), rb=sz)
        assert ok or n == 0, f"rejected: {op.name} n={n} shift={sz}"
    await b.check_all_vmem()
    b.report()
    for op in (Op.VNQA, Op.VUMAX2, Op.VQ):
        assert {p for o, p in b.stats if o == op} == {"slow", "wide"}, f"{op.name}: a path not run"


@cocotb.test()
async def test_rec_glu(dut):
    """VREC, VGLU: F = 6 .. > 16, inputs at and beyond the sigmoid's clamp, shifts, saturation."""
    b = await bench(dut)
    rng = random.Random(13)
    D = b.vdepth
    omlb = vec(rng, 4096, 18, 0.1)
    omlb[:8] = [0, 1, -1, (1 << 17) - 1, 65536, 1 << 16, 32768, -(1 << 17)]
    await b.put_cmem(0, omlb)

    def ys(n, F):
        c = 16 << min(F, 16)
        c = c << (F - 16) if F > 16 else c
        lim = min(4 * c, (1 << 35) - 1)
        pool = [max(-lim - 1, min(lim, v)) for v in (0, 1, -1, c - 1, c, c + 1, -c, -c + 1, -c - 1, 2 * c, -3 * c)]
        return np.asarray([rng.choice(pool) if rng.random() < 0.3 else rng.randint(-lim, lim) for _ in range(n)],
                          np.int64)

    Fs = (6, 7, 11, 12, 16, 17, 20, 26, 30)
    for k in range(70):
        n = rng.choice([0, 1, 2, 3, 40, 41, 192])
        a0, a1, a2 = (span(rng, n, D) for _ in range(3))
        if k % 2 == 0:   # VREC: state s at a0 (in place), i at a1, f at a2; the paths in turn
            mode = (k // 2) % 3
            a2 = span(rng, n + 3, D)
            a2 += (a1 + (rng.choice([1, 3]) if mode < 2 else rng.choice([0, 2])) - a2) % 4
            if mode == 0:      # wide: s read VREC_S_LAG elements behind f, i, in the fourth bank
                a0 = span(rng, n + 3, D)
                a0 += (({0, 1, 2, 3} - {a1 % 4, a2 % 4}).pop() + VREC_S_LAG - a0) % 4
            Fi, Ff = rng.choice(Fs), rng.choice(Fs)
            await b.put_vmem(a2, ys(n, Ff))
            iv = ys(n, Fi)
            iv = iv.clip(-(1 << 26), 1 << 26)
            await b.put_vmem(a1, iv)
            await b.put_vmem(a0, vec(rng, n, rng.choice([30, 20, 8])))
            if a1 < a0 < a1 + n or a2 < a0 < a2 + n:
                a0 = min(a1, a2)   # the state behind both inputs (i, f overwritten from there on)
            ok = await b.run(ins_(Op.VREC, n=n, a0=a0, a1=a1, a2=a2, imm=rng.randrange(0, 4096 - n + 1),
                                  sat=rng.choice([0, 0, 36, 30])), ra=Fi, rb=Ff, rc=rng.choice([0, 1, 2, 16, 40]))
        else:            # VGLU: y at a1, x at a2; the three paths in turn (a2 - a1 = 2, odd, 0 modulo 4)
            a2 = span(rng, n + 3, D)
            a2 += (a1 + (2, rng.choice([1, 3]), 0)[(k // 2) % 3] - a2) % 4
            F = rng.choice(Fs + (40, 60))
            await b.put_vmem(a1, ys(n, F))
            await b.put_vmem(a2, vec(rng, n, rng.choice([20, 18, 2])))
            if a1 < a0 < a1 + n or a2 < a0 < a2 + n:
                a0 = min(a1, a2)
            ok = await b.run(ins_(Op.VGLU, n=n, a0=a0, a1=a1, a2=a2, imm=rng.choice([0, 1]),
                                  sat=rng.choice([0, 36, 20, 8])), ra=F, rb=rng.choice([-4, -1, 0, 9, 10, 30, 200]))
        if not ok:
            dut._log.info(f"case {k} rejected by the executor")
    # maximum length
    n = D // 2
    await b.put_vmem(0, ys(D, 12).clip(-(1 << 26), 1 << 26))
    await b.run(ins_(Op.VGLU, n=n, a0=0, a1=0, a2=n, sat=36), ra=12, rb=0)
    await b.put_vmem(0, ys(D, 12).clip(-(1 << 26), 1 << 26))
    await b.run(ins_(Op.VGLU, n=n - 3, a0=0, a1=0, a2=n + 2, sat=36), ra=12, rb=0)     # two lanes, odd n
    await b.put_vmem(0, ys(D, 12).clip(-(1 << 26), 1 << 26))
    await b.run(ins_(Op.VREC, n=D, a0=0, a1=0, a2=0, imm=0, sat=36), ra=12, rb=11, rc=2)
    await b.put_vmem(0, ys(D, 12).clip(-(1 << 26), 1 << 26))
    await b.run(ins_(Op.VREC, n=n - 1, a0=0, a1=0, a2=n + 1, imm=0, sat=36), ra=12, rb=11, rc=2)   # wide
    await b.check_all_vmem()
    b.report()
    for op in (Op.VREC, Op.VGLU):
        assert {p for o, p in b.stats if o == op} == {"slow", "wide"}, f"{op.name}: a path not run"
