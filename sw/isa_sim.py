"""Instruction-level executor of the accelerator core, with its cycle model.

:class:`Core` executes a :class:`sw.program.CompiledModel`'s program on modelled memories
(``VMEM``, ``CMEM``, ``TMEM``, ``SIGMEM``, the engine's ``WMEM`` and ``AMEM``) and scalar
registers, with integer numpy only, one instruction at a time. The function units (rounding
shifter, leading-zero counter, pseudo-float normaliser, sigmoid by table and interpolation,
reciprocal and rsqrt by table and one Newton step) are implemented here from their definitions
in ``docs/arithmetic.md``, reading their tables from the loaded memory images; the tests compare
the result with :class:`models.intref.IntRefModel`, which must agree bit for bit.

The executor also enforces what the hardware cannot do: every VMEM write must fit the 36-bit
word, scalar registers are 54 bits, every scalar multiply fits one 18 x 18 multiplier, and a
program that touches a GEMV's output (or its max register) before a ``SYNC`` has retired that
GEMV raises :class:`HazardError`.

Cycle model (``docs/isa.md``, "Cycle model"): an in-order sequencer issues one instruction per
cycle to three units that run in parallel: a pipelined scalar unit (:data:`SCALAR_CYCLES` from
issue to result), the vector unit (one instruction at a time, ``VECTOR_LATENCY[op] +
ceil(n / width) * beats`` cycles, ``beats`` from :func:`vector_beats`) and the GEMV engine
(``groups * chunks`` beats, one weight word per cycle as measured on the gateware, plus
:func:`gemv_latency`). A register scoreboard stalls issue until an instruction's scalar
operands (and destinations) are ready; a GEMV starts when the engine is idle and the vector unit
has written its codes (or, chained, while the codes are being written); ``SYNC k`` waits until
at most ``k`` GEMVs are outstanding; a GEMV's writeback shares the VMEM port with the vector
unit. Cycle counts do not depend on the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .isa import REG_BITS, REG_NEXT, REG_TOKEN, VMEM_BITS, Instr, Op, gemv_fields
from .packing import FORMATS, unpack

__all__ = ["Core", "HazardError", "CycleReport", "SCALAR_CYCLES", "VECTOR_LATENCY", "VECTOR_DEMAND", "vector_beats",
           "gemv_latency", "rshift", "bit_length_int"]

_I64 = np.int64


class HazardError(RuntimeError):
    """The program reads or writes a GEMV result (or its register) before syncing on it."""


# ---------------------------------------------------------------------------- cycle model
#: Cycles per scalar instruction (issue to result usable by the next instruction): those of
#: ``hw/core/scalar_unit.py`` (operand registers, then registered stages, result registers).
SCALAR_CYCLES = {
    Op.NOP: 1, Op.HALT: 1, Op.SYNC: 1,
    Op.SLI: 2, Op.SADD: 3, Op.SSUB: 3, Op.SMAXI: 3, Op.SZSEL: 3,   # operands, one adder, write
    Op.SBLEN: 4,                      # leading-zero count, then add
    Op.SRSHI: 6, Op.SRSHR: 6,         # clamp, shifter in two stages, rounding increment
    Op.SMUL: 5, Op.SMULI: 5,          # one MULT18X18D, input and product registers, correction add
    Op.SNORM: 7, Op.SMANT16: 7,       # leading-zero count, then shift (+ round for SNORM)
    Op.SLDC: 2,                       # CMEM read
    Op.SRECIP: 8,                     # table read, 2 dependent multiplies, subtract
    Op.SRSQ: 14,                      # normalise, table read, 3 dependent multiplies
    Op.GEMV: 1,                       # issue (plus waiting for the engine to accept)
}
#: Pipeline latency (fill + drain) of each vector instruction, cycles.
VECTOR_LATENCY = {
    Op.VSET: 2, Op.VEMB: 4, Op.VADD: 4, Op.VMAXABS: 4, Op.VARGMAX: 4,
    Op.VNQA: 8, Op.VUMAX2: 6, Op.VQ: 7, Op.VGLU: 9, Op.VREC: 12,
}
#: Per element: (VMEM reads, sigmoid evaluations) of the vector instructions that need more than
#: one VMEM read or a sigmoid. With ``read_ports`` VMEM read ports and ``sigmoid_per_lane``
#: sigmoid units per lane, an instruction takes ``max(1, ceil(reads / read_ports),
#: ceil(sigmoids / sigmoid_per_lane))`` cycles per group of ``width`` elements.
VECTOR_DEMAND = {Op.VADD: (2, 0), Op.VGLU: (2, 1), Op.VREC: (3, 2)}


def vector_beats(op: Op, read_ports: int = 1, sigmoid_per_lane: float = 0.5) -> int:
    """Cycles per group of ``width`` elements of vector instruction ``op``."""
    reads, sig = VECTOR_DEMAND.get(op, (1, 0))
    b = max(1, -(-reads // read_ports))
    if sig:
        b = max(b, int(np.ceil(sig / sigmoid_per_lane)))
    return b


def gemv_latency(lanes: int, fmt: str = "2bit") -> int:
    """Cycles from the engine's last beat to the last rescaled output written to VMEM.

    The engine's own fixed latency (:attr:`hw.gemv.GemvEngine.latency`, counted from the command
    being offered, so one less from its last beat): command accept, block-RAM read, operand
    register, the adder tree (``ceil(log2 lanes)`` registered adder levels + the accumulator,
    +3 with the trits5 decoder's input and chain registers) and the output FIFO; then the output
    rescale multiply, shift/saturate and the VMEM write (3). tests/sim/test_gemv.py checks this
    against the gateware's figure.
    """
    pe = (max(1, lanes) - 1).bit_length() + 1 + 3 * (fmt == "trits5")
    return (pe + 5) - 1 + 3


# ---------------------------------------------------------------------------- arithmetic
def rshift(x, s):
    """``round(x / 2**s)``, ties away from zero; ``s <= 0`` is an exact left shift (array or int)."""
    if isinstance(x, (int, np.integer)) and isinstance(s, (int, np.integer)):
        x, s = int(x), int(s)
        if s <= 0:
            return x << -s
        if abs(x).bit_length() < s:
            return 0  # |x| < 2**(s-1): rounds to 0 (and a huge s must not build a huge int)
        a = (abs(x) + (1 << (s - 1))) >> s
        return -a if x < 0 else a
    x = np.asarray(x, dtype=_I64)
    s = int(s)
    if s <= 0:
        return x << _I64(-s)
    if s >= 63:   # 2**(s-1) + |x| may not fit int64: |x| / 2**s < 1 rounds to +-1 or 0
        return np.where(np.abs(x) >= (_I64(1) << _I64(62)) if s == 63 else False, np.sign(x), 0).astype(_I64)
    a = (np.abs(x) + (_I64(1) << _I64(s - 1))) >> _I64(s)
    return np.where(x < 0, -a, a)


def bit_length_int(x: int) -> int:
    if x < 0:
        raise ValueError("bit length of a negative value")
    return int(x).bit_length()


def _norm17(x: int) -> tuple[int, int]:
    if x < 0:
        raise ValueError("SNORM of a negative value")
    if x == 0:
        return 0, 0
    e = x.bit_length() - 17
    m = rshift(x, e)
    if m >= 1 << 17:
        m, e = m >> 1, e + 1
    return m, e


def _fits_mult18(v: int) -> bool:
    return -(1 << 17) <= v < (1 << 18)  # signed or unsigned 18-bit operand


def _regs(ins: Instr) -> tuple[list[int], list[int]]:
    """(scalar registers read, scalar registers written) by ``ins``."""
    op = ins.op
    if op in (Op.NOP, Op.HALT, Op.SYNC, Op.VSET):
        return [], []
    if op == Op.SLI:
        return [], [ins.rd]
    if op in (Op.SADD, Op.SSUB, Op.SMUL, Op.SRSHR):
        return [ins.ra, ins.rb], [ins.rd]
    if op in (Op.SMAXI, Op.SMULI, Op.SRSHI, Op.SBLEN, Op.SRECIP, Op.SLDC):
        return [ins.ra], [ins.rd]
    if op in (Op.SNORM, Op.SMANT16, Op.SRSQ):
        return [ins.ra], [ins.rd, ins.rc]
    if op == Op.SZSEL:
        return [ins.ra, ins.rb, ins.rc], [ins.rd]
    if op == Op.VEMB:
        return [ins.ra, ins.rb], [ins.rd]
    if op in (Op.VADD, Op.VMAXABS, Op.VARGMAX):
        return [], [ins.rd]
    if op in (Op.VNQA, Op.VUMAX2):
        return [ins.rb], [ins.rd, ins.rc]
    if op == Op.VQ:
        return [ins.ra, ins.rb, ins.rc], []
    if op == Op.VREC:
        return [ins.ra, ins.rb, ins.rc], [ins.rd]
    if op == Op.VGLU:
        return [ins.ra, ins.rb], [ins.rd]
    if op == Op.GEMV:
        return ([] if gemv_fields(ins.imm).raw else [ins.ra, ins.rb]), [ins.rd]
    raise ValueError(f"unknown opcode {op!r}")


@dataclass
class CycleReport:
    """Cycles of the last token."""

    total: int = 0
    engine_busy: int = 0          # beats the GEMV engine ran (weight words read)
    useful_macs: int = 0          # sum of M * K over the GEMVs
    per_op: dict = field(default_factory=dict)   # opcode name -> sequencer cycles spent on it
    stall_engine: int = 0         # sequencer cycles waiting for the engine (GEMV issue, SYNC)
    vector_busy: int = 0          # cycles the vector unit streamed (latency included)
    vector_queue_max: int = 0     # most vector instructions waiting to start at one issue

    def utilisation(self, lanes: int, rows: int) -> float:
        """Useful MAC cycles (``useful_macs / (lanes * rows)``) over all cycles of the token."""
        return self.useful_macs / (lanes * rows) / self.total if self.total else 0.0


@dataclass
class _Pending:
    dst: tuple[int, int]
    bank: int
    rd: int
    start: int
    beats_end: int
    done: int
    wb_beats: int
    chunks: int


class Core:
    """The accelerator core executing a compiled model.

    Parameters
    ----------
    compiled : sw.program.CompiledModel
    width : int
        Vector-unit lanes: elements per cycle (cycle model only).
    hook : callable, optional
        ``hook(core, pc, instr, cycles)`` after every instruction (``cycles`` = issue to result).
    read_ports : int
        VMEM read ports of the vector unit (1: one pseudo-dual-port RAM; 2: two copies).
    sigmoid_per_lane : float
        Sigmoid units (one table BRAM each) per lane; 0.5 = one unit shared by two lanes.
    """

    def __init__(self, compiled, width: int = 16, hook=None, read_ports: int = 1, sigmoid_per_lane: float = 0.5):
        if width < 1:
            raise ValueError("width must be >= 1")
        if read_ports not in (1, 2) or not 0 < sigmoid_per_lane <= 2:
            raise ValueError("read_ports must be 1 or 2 and sigmoid_per_lane in (0, 2]")
        self.c = compiled
        self.width = width
        self.beats = {op: vector_beats(op, read_ports, sigmoid_per_lane) for op in VECTOR_LATENCY}
        self.hook = hook
        w = compiled.weights
        self.lanes, self.rows = w.lanes, w.rows
        self.vmem = np.zeros(compiled.vmem_words, dtype=_I64)
        self.cmem = np.asarray(compiled.cmem, dtype=_I64).copy()
        self.tmem = np.asarray(compiled.tmem, dtype=_I64).copy()
        self.sigmem = np.asarray(compiled.sigmem, dtype=_I64).copy()
        self.k_max = -(-max(compiled.d_model, compiled.d_ff) // self.lanes) * self.lanes
        self.amem = np.zeros((2, self.k_max), dtype=_I64)
        self.wmem = self._decode_weights(w)   # (words, rows, lanes) int8, from the packed image
        self._wcache: dict = {}
        self.regs = [0] * 32
        self.gemv_lat = gemv_latency(self.lanes, w.fmt)
        self.cycles = CycleReport()

    # ------------------------------------------------------------------ memories
    @staticmethod
    def _decode_weights(w) -> np.ndarray:
        b = w.word_bytes()
        nb = b.shape[1] // w.rows
        rowsb = b.reshape(-1, nb)
        if w.lanes % FORMATS[w.fmt][0] == 0:
            t = unpack(rowsb.reshape(-1), rowsb.shape[0] * w.lanes, w.fmt)
        else:
            t = np.concatenate([unpack(r, w.lanes, w.fmt) for r in rowsb])
        return t.reshape(len(w.words), w.rows, w.lanes).astype(np.int8)

    def region(self, name: str) -> np.ndarray:
        """A copy of the named VMEM region (``compiled.vmem_map``)."""
        a, n = self.c.vmem_map[name]
        return self.vmem[a:a + n].copy()

    def state(self, layer: int) -> np.ndarray:
        return self.region(f"state{layer}")

    # ------------------------------------------------------------------ running
    def reset(self) -> None:
        """Run the reset program (zeroes every layer's state)."""
        self._run(self.c.reset_program, token=0)

    def step(self, token: int):
        """Run the token program. Returns ``(logits, next_token)``; cycles in :attr:`cycles`."""
        token = int(token)
        if not 0 <= token < self.c.vocab_size:
            raise ValueError(f"token {token} out of range 0..{self.c.vocab_size - 1}")
        self._run(self.c.program, token)
        self.cycles.useful_macs = self.c.gemv_macs
        return self.region("logits"), int(self.regs[REG_NEXT])

    def _run(self, prog, token: int) -> None:
        self.regs = [0] * 32
        self.regs[REG_TOKEN] = token
        self.t = 0
        self.eng_free = 0
        self.vec_free = 0
        self.vec_queue = 0
        self._vec_starts: list[int] = []
        self._last_vec = (Op.NOP, 0, 0, 0)
        self.reg_ready = [0] * 32
        self.pending: list[_Pending] = []
        self.cycles = CycleReport()
        for pc, ins in enumerate(prog):
            issue, done = self._time(ins)
            self._exec(ins)
            dt = done - issue
            name = ins.op.name
            self.cycles.per_op[name] = self.cycles.per_op.get(name, 0) + dt
            if self.hook is not None:
                self.hook(self, pc, ins, dt)
            if ins.op == Op.HALT:
                break
        else:
            raise RuntimeError("program ended without HALT")
        self.cycles.total = self.t
        self.cycles.vector_queue_max = self.vec_queue

    # ------------------------------------------------------------------ helpers
    def _r(self, i: int) -> int:
        for p in self.pending:
            if p.rd and p.rd == i:
                raise HazardError(f"r{i} is written by an unsynced GEMV")
        return 0 if i == 0 else self.regs[i]

    def _w(self, i: int, v) -> None:
        v = int(v)
        if not -(1 << (REG_BITS - 1)) <= v < (1 << (REG_BITS - 1)):
            raise OverflowError(f"r{i} = {v} does not fit {REG_BITS} bits")
        for p in self.pending:
            if p.rd and p.rd == i:
                raise HazardError(f"r{i} is written by an unsynced GEMV")
        if i:
            self.regs[i] = v

    def _touch(self, a: int, n: int, chained: bool = False) -> None:
        for k, p in enumerate(self.pending):
            if a < p.dst[0] + p.dst[1] and p.dst[0] < a + n:
                if chained and k == len(self.pending) - 1 and a == p.dst[0] and n <= p.dst[1]:
                    continue  # chained read of the newest GEMV's output, in the order it is written
                raise HazardError(f"VMEM[{a}:{a + n}] overlaps the output of an unsynced GEMV")

    def _vr(self, a: int, n: int, chained: bool = False) -> np.ndarray:
        if a + n > self.vmem.size:
            raise IndexError(f"VMEM read [{a}, {a + n}) beyond {self.vmem.size} words")
        self._touch(a, n, chained)
        return self.vmem[a:a + n]

    def _vw(self, a: int, x, sat: int = 0, n: int | None = None) -> int:
        x = np.asarray(x, dtype=_I64)
        if sat:
            lim = _I64(1) << _I64(sat - 1)
            x = np.clip(x, -lim, lim - 1)
        lim = 1 << (VMEM_BITS - 1)
        if x.size and (x.min() < -lim or x.max() >= lim):
            raise OverflowError(f"value does not fit the {VMEM_BITS}-bit VMEM word")
        if a + x.size > self.vmem.size:
            raise IndexError(f"VMEM write [{a}, {a + x.size}) beyond {self.vmem.size} words")
        self._touch(a, x.size)
        self.vmem[a:a + x.size] = x
        return int(np.abs(x).max()) if x.size else 0

    def _cm(self, a: int, n: int) -> np.ndarray:
        if a < 0 or a + n > self.cmem.size:
            raise IndexError(f"CMEM read [{a}, {a + n}) beyond {self.cmem.size} words")
        return self.cmem[a:a + n]

    def recip_unit(self, mn, base: int):
        """SRECIP: ``~2**32 / mn`` for ``2**15 <= mn < 2**16``, seed table at ``TMEM[base]``, one
        Newton step (two multiplies of at most 17 x 17 bits)."""
        mn = np.asarray(mn, dtype=_I64)
        if np.any(mn < (1 << 15)) or np.any(mn >= (1 << 16)):
            raise ValueError("SRECIP input is not a 16-bit mantissa")
        r0 = self.tmem[base + (mn >> 7) - 256]
        e = mn * r0 - (_I64(1) << _I64(32))
        return r0 - rshift(r0 * rshift(e, 8), 24)

    def rsqrt_unit(self, ss, base: int):
        """SRSQ: ``(q, k)`` with ``1/sqrt(ss) ~= q 2**-(23 + k/2)``; ``k`` even, mantissa
        ``ms = ss >> k`` in ``[2**14, 2**16)`` (truncated; ``2**14`` for ``ss = 0``), seed table at
        ``TMEM[base]``, one Newton step (three multiplies of at most 17 x 17 bits)."""
        ss = np.asarray(ss, dtype=_I64)
        if np.any(ss < 0) or np.any(ss >= (1 << 53)):
            raise ValueError("SRSQ input out of range")
        _, k = np.frexp(ss.astype(np.float64))   # bit length (exact below 2**53)
        k = k.astype(_I64) - 16
        k = k + (k % 2)
        ms = np.where(k >= 0, ss >> np.maximum(k, 0), ss << np.maximum(-k, 0))
        ms = np.where(ss == 0, 1 << 14, ms)
        q0 = self.tmem[base + (ms >> 7) - 128]
        t = rshift(q0 * q0, 16)
        e = ms * t - (_I64(1) << _I64(30))
        return q0 - rshift(q0 * rshift(e, 8), 23), k

    def sigmoid_unit(self, y, F: int) -> np.ndarray:
        """The sigmoid unit (public for tests), see :meth:`_sigmoid`."""
        return self._sigmoid(y, F)

    def _sigmoid(self, y, F: int) -> np.ndarray:
        """Sigmoid unit (uQ0.16 out): table SIGMEM, linear interpolation, odd symmetry."""
        y = np.asarray(y, dtype=_I64)
        if F < 6:
            raise ValueError("sigmoid input needs >= 6 fractional bits")
        if F > 16:
            y = rshift(y, F - 16)
            F = 16
        fb = F - 6
        a = np.minimum(np.abs(y), (16 << F) - 1)
        k = a >> fb
        fr = a & ((1 << fb) - 1)
        t0 = self.sigmem[k]
        d = t0 + rshift((self.sigmem[k + 1] - t0) * fr, fb)
        p = rshift((1 << 17) + d, 2)
        return np.where(y < 0, (1 << 16) - p, p)

    def _zp(self, a: int, n: int, sz: int) -> np.ndarray:
        return rshift(self._vr(a, n), sz)

    # ------------------------------------------------------------------ timing
    def _retire(self, keep: int) -> None:
        while len(self.pending) > keep:
            p = self.pending.pop(0)
            if p.done > self.t:
                self.cycles.stall_engine += p.done - self.t
                self.t = p.done
            # its writeback shares the VMEM write port: the vector unit loses the beats that
            # fall in the part of the output window [first output, done] where it was streaming
            first = p.start + 1 + p.chunks + self.gemv_lat
            busy = max(0, min(self.vec_free, p.done) - first)
            if busy and p.done > first:
                self.vec_free += -(-p.wb_beats * busy // (p.done - first))

    def _time(self, ins: Instr) -> tuple[int, int]:
        """Advance the cycle model over ``ins``; returns (issue, done) cycles."""
        op = ins.op
        srcs, dsts = _regs(ins)
        rdy = self.reg_ready
        issue = max([self.t] + [rdy[r] for r in srcs + dsts if r])
        if op in (Op.SYNC, Op.HALT):
            self.t = issue
            self._retire(0 if op == Op.HALT else max(ins.imm, 0))
            if op == Op.HALT:
                self.t = max(self.t, self.vec_free)
            self.t += 1
            return issue, self.t
        if op == Op.NOP or op in SCALAR_CYCLES and op != Op.GEMV:
            done = issue + SCALAR_CYCLES[op]
            self.t = issue + 1
        elif op == Op.GEMV:
            g = gemv_fields(ins.imm)
            beats = ins.a2 * g.chunks
            q = self._last_vec
            if g.chain and q[0] == Op.VQ and q[1] == g.bank:
                # codes chained: the first row group reads chunk c as soon as the VQ wrote it
                _, _, q_start, q_done = q
                start = max(issue, self.eng_free, q_start)
                self.eng_free = max(start + 1 + beats, q_done + 1 + (ins.a2 - 1) * g.chunks)
            else:
                start = max(issue, self.eng_free, self.vec_free)   # codes written, engine idle
                self.eng_free = start + 1 + beats
            self.cycles.stall_engine += start - issue
            self.cycles.engine_busy += beats
            done = self.eng_free + self.gemv_lat
            self._gemv_t = (start, self.eng_free, done)
            self.t = start + 1
        else:
            start = max(issue, self.vec_free)
            if op == Op.VQ:  # interlock: the engine no longer reads this bank
                busy = [p.beats_end for p in self.pending if p.bank == ins.a0]
                start = max([start] + busy)
            self.vec_queue = max(self.vec_queue, sum(1 for v in self._vec_starts if v > issue))
            self._vec_starts.append(start)
            beats = -(-ins.n // self.width) * self.beats[op]
            done = start + VECTOR_LATENCY[op] + beats
            if op == Op.VGLU and ins.imm & 1 and self.pending:
                # chained: element j of x[a2] is there once its row group has left the engine
                p = self.pending[-1]
                if p.dst[0] == ins.a2:
                    last = p.start + 1 + -(-ins.n // self.rows) * p.chunks + self.gemv_lat
                    done = max(done, last + self.beats[op] + VECTOR_LATENCY[op])
            self.vec_free = done
            self._last_vec = (op, ins.a0, start, done)
            self.cycles.vector_busy += done - start
            self.t = issue + 1
        for r in dsts:
            if r:
                rdy[r] = done
        return issue, done

    # ------------------------------------------------------------------ execute
    def _exec(self, ins: Instr) -> None:  # noqa: C901 (one case per opcode)
        op, R, W = ins.op, self._r, self._w
        if op in (Op.NOP, Op.HALT, Op.SYNC):
            return
        if op == Op.SLI:
            W(ins.rd, ins.imm)
        elif op == Op.SADD:
            W(ins.rd, R(ins.ra) + R(ins.rb) + ins.imm)
        elif op == Op.SSUB:
            W(ins.rd, R(ins.ra) - R(ins.rb) + ins.imm)
        elif op == Op.SMAXI:
            W(ins.rd, max(R(ins.ra), ins.imm))
        elif op in (Op.SMUL, Op.SMULI):
            a, b = R(ins.ra), (R(ins.rb) if op == Op.SMUL else ins.imm)
            if not (_fits_mult18(a) and _fits_mult18(b)):
                raise OverflowError(f"{op.name}: {a} x {b} does not fit an 18 x 18 multiplier")
            W(ins.rd, a * b)
        elif op == Op.SRSHI:
            W(ins.rd, rshift(R(ins.ra), ins.imm))
        elif op == Op.SRSHR:
            W(ins.rd, rshift(R(ins.ra), R(ins.rb)))
        elif op == Op.SBLEN:
            W(ins.rd, bit_length_int(R(ins.ra)) + ins.imm)
        elif op == Op.SNORM:
            m, e = _norm17(R(ins.ra))
            W(ins.rd, m)
            W(ins.rc, e)
        elif op == Op.SMANT16:
            m = R(ins.ra)
            t = bit_length_int(m) - 16
            mn = (m >> t if t >= 0 else m << -t) if m else 1 << 15
            W(ins.rd, mn)
            W(ins.rc, t)
        elif op == Op.SRECIP:
            W(ins.rd, int(self.recip_unit(R(ins.ra), ins.imm)))
        elif op == Op.SRSQ:
            q, k = self.rsqrt_unit(R(ins.ra), ins.imm)
            W(ins.rd, int(q))
            W(ins.rc, int(k))
        elif op == Op.SZSEL:
            W(ins.rd, 0 if (R(ins.ra) == 0 or R(ins.rb) == 0) else R(ins.rc))
        elif op == Op.SLDC:
            W(ins.rd, int(self._cm(R(ins.ra) + ins.imm, 1)[0]))
        elif op == Op.GEMV:
            self._gemv(ins)
        else:
            self._vector(ins)

    def _vector(self, ins: Instr) -> None:
        op, R, W, n = ins.op, self._r, self._w, ins.n
        if op == Op.VSET:
            self._vw(ins.a0, np.full(n, ins.imm, dtype=_I64), ins.sat)
        elif op == Op.VEMB:
            sh = R(ins.rb)
            if not 0 <= sh <= 45:  # shifter with overflow detection ahead of the saturator
                raise ValueError(f"VEMB shift {sh} out of range 0..45")
            mx = self._vw(ins.a0, self._cm(R(ins.ra), n) << _I64(sh), ins.sat)
            W(ins.rd, mx)
        elif op == Op.VADD:
            mx = self._vw(ins.a0, self._vr(ins.a1, n) + self._vr(ins.a2, n), ins.sat)
            W(ins.rd, mx)
        elif op == Op.VMAXABS:
            W(ins.rd, int(np.abs(self._vr(ins.a1, n)).max()) if n else 0)
        elif op in (Op.VNQA, Op.VUMAX2):
            zp = self._zp(ins.a1, n, R(ins.rb))
            if op == Op.VNQA:
                v = rshift(zp * self._cm(ins.a2, n), 17)
                W(ins.rd, int(np.sum(v * v)))
                if ins.rc:
                    W(ins.rc, int(np.abs(zp * self._cm(ins.a0, n)).max()))
            else:
                W(ins.rd, int(np.abs(zp * self._cm(ins.a2, n)).max()))
                if ins.rc:
                    W(ins.rc, int(np.abs(zp * self._cm(ins.a0, n)).max()))
        elif op == Op.VQ:
            if ins.a0 not in (0, 1):
                raise ValueError("VQ bank must be 0 or 1")
            if n > self.k_max:
                raise IndexError(f"VQ of {n} codes: an activation bank holds {self.k_max}")
            u = self._zp(ins.a1, n, R(ins.rb)) * self._cm(ins.a2, n)
            x = rshift(rshift(u, R(ins.rc)) * R(ins.ra), 25)
            self.amem[ins.a0, :n] = np.clip(x, -127, 127)
        elif op == Op.VREC:
            i, f, s = self._vr(ins.a1, n), self._vr(ins.a2, n), self._vr(ins.a0, n)
            omlb = self._cm(ins.imm, n)
            om = rshift(omlb * ((1 << 16) - self._sigmoid(f, R(ins.rb))), 16)
            target = rshift(i * self._sigmoid(i, R(ins.ra)), R(ins.rc))
            s = s + rshift(om * (target - s), 16)
            W(ins.rd, self._vw(ins.a0, s, ins.sat))
        elif op == Op.VGLU:
            y = self._vr(ins.a1, n)
            sy = rshift(rshift(y, R(ins.rb)) * self._sigmoid(y, R(ins.ra)), 16)
            W(ins.rd, self._vw(ins.a0, sy * self._vr(ins.a2, n, chained=bool(ins.imm & 1)), ins.sat))
        elif op == Op.VARGMAX:
            W(ins.rd, int(np.argmax(self._vr(ins.a1, n))))
        else:
            raise ValueError(f"unknown opcode {op!r}")

    def _gemv(self, ins: Instr) -> None:
        chunks, bank, raw, residual, _ = gemv_fields(ins.imm)
        groups, base, n = ins.a2, ins.a1, ins.n
        if n > groups * self.rows:
            raise ValueError(f"GEMV writes {n} outputs but computes {groups * self.rows}")
        if base + groups * chunks > self.wmem.shape[0]:
            raise IndexError("GEMV reads beyond the weight image")
        if chunks * self.lanes > self.k_max:
            raise IndexError("GEMV chunks beyond the activation bank")
        sm, sh = (0, 0) if raw else (self._r(ins.ra), self._r(ins.rb))
        # functional: acc[g*rows + r] = sum_c sum_l W[base + g*chunks + c, r, l] * A[bank, c*lanes + l]
        key = (base, groups, chunks)
        wm = self._wcache.get(key)
        if wm is None:  # (groups * rows, chunks * lanes) as float64: exact, |acc| <= 127 K << 2**53
            w = self.wmem[base:base + groups * chunks].reshape(groups, chunks, self.rows, self.lanes)
            wm = self._wcache[key] = w.transpose(0, 2, 1, 3).reshape(groups * self.rows, -1).astype(np.float64)
        acc = (wm @ self.amem[bank, :chunks * self.lanes].astype(np.float64)).astype(_I64)[:n]
        y = acc if raw else rshift(acc * sm, sh)
        if residual:   # read-modify-write of the destination: sat(x + sat(y))
            if ins.sat:
                lim = _I64(1) << _I64(ins.sat - 1)
                y = np.clip(y, -lim, lim - 1)
            y = self._vr(ins.a0, n) + y
        mx = self._vw(ins.a0, y, ins.sat)
        if ins.rd:
            self._w(ins.rd, mx)
        start, beats_end, done = self._gemv_t
        self.pending.append(_Pending((ins.a0, n), bank, ins.rd, start, beats_end, done, -(-n // self.width),
                                     chunks))
