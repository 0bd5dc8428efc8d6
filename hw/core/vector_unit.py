"""The core's vector unit: the vector instructions of ``sw/isa.py``, bit for bit as ``sw.isa_sim``.

:class:`VectorUnit` executes ``VSET``, ``VEMB``, ``VADD``, ``VMAXABS``, ``VNQA``, ``VUMAX2``,
``VQ``, ``VREC``, ``VGLU`` and ``VARGMAX`` exactly as :meth:`sw.isa_sim.Core._vector` does
(``docs/isa.md``; the rounding shift, sigmoid unit and saturation of ``docs/arithmetic.md``). Any
other opcode finishes in the cycle after it is accepted, without writes.

Interface (initiator's view of the memories, which belong to the core):

* ``cmd`` -- ``In(stream.Signature(UNIT_CMD_LAYOUT))``: the 128-bit instruction word and the
  values of ``R[ra]``, ``R[rb]``, ``R[rc]`` read at issue. ``cmd.ready = ~busy``.
* ``result`` -- ``Out(UnitResultSignature())``: a one-cycle ``done`` pulse in the cycle after the
  last memory write of the instruction was issued; ``rd_we``/``rd_data`` and ``rc_we``/``rc_data``
  are valid in that cycle. ``rd_we`` is set for every opcode whose executor semantics write
  ``R[rd]`` (``VEMB``, ``VADD``, ``VMAXABS``, ``VNQA``, ``VUMAX2``, ``VREC``, ``VGLU``,
  ``VARGMAX``; also for ``rd = 0``, which the register file ignores); ``rc_we`` for ``VNQA`` and
  ``VUMAX2`` when the ``rc`` field is not 0.
* ``busy`` -- high from the cycle after ``cmd`` is accepted up to and including the ``done`` cycle.
* ``vmem_rd`` / ``vmem_wr`` -- VMEM (36-bit signed words): synchronous read (``data`` the cycle
  after ``en``; a read of the address written in the same cycle returns the old word) and write.
* ``cmem_rd`` -- CMEM (18-bit signed), ``sig_rd`` -- SIGMEM (18-bit unsigned sigmoid table).
* ``a_wr`` -- the GEMV engine's activation-memory write port: ``VQ`` code ``j`` of bank ``b`` goes
  to word ``b * chunks_max + j // lanes``, byte lane ``j % lanes``, with ``en`` one-hot on it.

Addresses are truncated to the port widths (they wrap); ``n = 0`` finishes without writes.

Datapath: each opcode is a list of steps (one cycle each) that one element goes through, over
one shared signed multiplier (``MUL_A`` x ``MUL_B`` bits, registered operands and registered
product: the product of operands set in step ``k`` is read in step ``k + 2``), one shared
rounding shifter (``round_shift`` half away from zero by a signed amount; ``<= 0`` is an exact
left shift, ``>= SHIFT_BITS`` gives 0; registered output, read in the next step) and the
reductions (max ``|written|``, sum of squares, max, argmax) in registers. The sigmoid
(``Core._sigmoid``: optional rescale to 16 fractional bits, clamp, table index and fraction, two
table reads, interpolation multiply and shift, odd symmetry) takes 7 steps of the same datapath.
The step lists are modulo-scheduled: element ``e`` runs step ``k`` in cycle ``e * II + k`` of the
run, ``II = INTERVAL[op]``; steps of elements in flight at the same time never share a memory
port, the multiplier or the shifter, and elements finish in order.

Cycles, measured by ``sim/tb_vector_unit.py`` (accepted in cycle ``t``, ``done`` in cycle
``t + cycles(op, n)`` = ``t + OVERHEAD + (n - 1) * INTERVAL[op] + ELEMENT_CYCLES[op]``; the
testbench asserts it for every instruction)::

    opcode    cycles per element (II)   steps per element (depth)
    VSET      1                         1
    VEMB      1                         3
    VADD      2  (two VMEM reads)       3
    VMAXABS   1                         2
    VARGMAX   1                         2
    VNQA      4                         8
    VUMAX2    2                         6
    VQ        4                         9
    VGLU      4                         17
    VREC      8                         17
    fixed: OVERHEAD = 2 cycles (one set-up cycle and the done cycle)

``n = 0`` and non-vector opcodes: ``done`` in cycle ``t + 1``. ``busy`` (and ``cmd.ready`` low)
covers cycles ``t + 1`` to the ``done`` cycle, so the next instruction can be accepted in the
cycle after ``done``.

Exactness domain: the results equal the executor's for every instruction it accepts whose
intermediate values fit the datapath: multiplier operands within ``MUL_A`` (the vector-side
value: ``z'``, ``rshift(u, R[rc])``, ``i``, ``target - s``, ``rshift(y, R[rb])``, the SiLU factor
``sy``) and ``MUL_B`` bits signed (``VQ``'s ``R[ra]``, ``x[a2]`` of ``VGLU``), left shifts within
``SHIFT_BITS``. The executor computes in int64 and silently wraps beyond it, so its own results are
meaningful only in a narrower domain. Source and destination ranges must not overlap with the
destination ahead of a source (``a_src < a0 < a_src + n``): the executor reads all sources before
writing, this unit may read a word after an earlier element of the same instruction wrote it (a
destination at or behind its sources, ``a0 <= a_src``, e.g. in place, is exact: every step list
reads an element's sources before it writes the element).

Timing: correctness first; the wide multiplier (several ``MULT18X18D``) and the 82-bit shifter are
one registered stage each, not yet placed at 75 MHz.
"""

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import REG_BITS, VMEM_BITS, Op

from .ports import UNIT_CMD_LAYOUT, MemReadSignature, MemWriteSignature, UnitResultSignature

__all__ = ["VectorUnit", "ELEMENT_CYCLES", "INTERVAL", "OVERHEAD", "cycles", "MUL_A", "MUL_B", "SHIFT_BITS"]

#: Steps (cycles) of one element of each vector opcode.
ELEMENT_CYCLES = {
    Op.VSET: 1, Op.VEMB: 3, Op.VADD: 3, Op.VMAXABS: 2, Op.VARGMAX: 2,
    Op.VNQA: 8, Op.VUMAX2: 6, Op.VQ: 9, Op.VGLU: 17, Op.VREC: 17,
}
#: Cycles between the starts of consecutive elements (the step lists are modulo-scheduled: no
#: two steps in the same residue class use the same memory port, the multiplier or the shifter,
#: and no working register is rewritten before its last use).
INTERVAL = {
    Op.VSET: 1, Op.VEMB: 1, Op.VADD: 2, Op.VMAXABS: 1, Op.VARGMAX: 1,
    Op.VNQA: 4, Op.VUMAX2: 2, Op.VQ: 4, Op.VGLU: 4, Op.VREC: 8,
}
#: Cycles from accepting an instruction to ``done`` beyond the element steps.
OVERHEAD = 2


def cycles(op, n: int) -> int:
    """Cycles from accepting a vector instruction (cycle ``t``) to its ``done`` (cycle ``t + cycles``)."""
    op = Op(op)
    if op not in ELEMENT_CYCLES or n == 0:
        return 1
    return OVERHEAD + (n - 1) * INTERVAL[op] + ELEMENT_CYCLES[op]

MUL_A = 44        #: multiplier operand A, signed bits
MUL_B = 37        #: multiplier operand B, signed bits
SHIFT_BITS = 82   #: rounding shifter operand and result, signed bits
_SH = 8           #: shift amounts are clamped to [-127, 127] (signed 8 bits)
_CMEM_BITS = 18
_SIG_BITS = 18


def _check(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, not {v!r}")


def _aw(depth):
    return max(1, (depth - 1).bit_length())


def _clamp(v, lo, hi):
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def _round_shift_const(v, s: int):
    """``round_shift(v, s)`` of a signed value by a constant ``s > 0`` (half away from zero)."""
    inc = ~v[-1] | v[:s - 1].any() if s > 1 else ~v[-1]
    return ((v >> (s - 1)) + inc) >> 1


def _abs(v):
    return Mux(v < 0, -v, v)


class VectorUnit(wiring.Component):
    """Vector unit of the accelerator core (``docs/isa.md``), one element at a time.

    Parameters
    ----------
    vmem_depth, cmem_depth, sig_depth : int
        Words of VMEM, CMEM and SIGMEM (address widths of the ports).
    lanes : int
        Byte lanes of an activation-memory word of the GEMV engine.
    chunks_max : int
        Activation-memory words per bank (``k_max = chunks_max * lanes`` codes).
    """

    def __init__(self, vmem_depth: int = 4096, cmem_depth: int = 65536, sig_depth: int = 2048,
                 lanes: int = 32, chunks_max: int = 16):
        for name, v in (("vmem_depth", vmem_depth), ("cmem_depth", cmem_depth), ("sig_depth", sig_depth),
                        ("lanes", lanes), ("chunks_max", chunks_max)):
            _check(name, v)
        self._vmem_depth, self._cmem_depth, self._sig_depth = vmem_depth, cmem_depth, sig_depth
        self._lanes, self._chunks_max = lanes, chunks_max
        self.vaw, self.caw, self.saw = _aw(vmem_depth), _aw(cmem_depth), _aw(sig_depth)
        self.aaw = _aw(2 * chunks_max)
        super().__init__({
            "cmd": In(stream.Signature(UNIT_CMD_LAYOUT)),
            "result": Out(UnitResultSignature()),
            "busy": Out(1),
            "vmem_rd": Out(MemReadSignature(self.vaw, signed(VMEM_BITS))),
            "vmem_wr": Out(MemWriteSignature(self.vaw, signed(VMEM_BITS))),
            "cmem_rd": Out(MemReadSignature(self.caw, signed(_CMEM_BITS))),
            "sig_rd": Out(MemReadSignature(self.saw, unsigned(_SIG_BITS))),
            "a_wr": Out(MemWriteSignature(self.aaw, unsigned(8 * lanes), lanes)),
        })

    vmem_depth = property(lambda self: self._vmem_depth)
    cmem_depth = property(lambda self: self._cmem_depth)
    sig_depth = property(lambda self: self._sig_depth)
    lanes = property(lambda self: self._lanes)
    chunks_max = property(lambda self: self._chunks_max)

    def elaborate(self, platform):  # noqa: C901 (one step list per opcode)
        m = Module()
        lanes, chunks_max = self._lanes, self._chunks_max

        # ------------------------------------------------------------ instruction registers
        ir = Signal(128)
        rA, rB, rC = Signal(signed(REG_BITS)), Signal(signed(REG_BITS)), Signal(signed(REG_BITS))
        op, sat = ir[0:6], ir[6:12]
        rc_f = ir[27:32]
        n, a0, a1, a2 = ir[32:48], ir[48:68], ir[68:88], ir[88:108]
        imm = ir[108:128].as_signed()

        accept = Signal()
        m.d.comb += [self.cmd.ready.eq(~self.busy), accept.eq(self.cmd.valid & self.cmd.ready)]

        # ------------------------------------------------------------ per-instruction set-up
        shz = Signal(signed(_SH))    # clamp(R[rb]): z' / y shift (VNQA, VUMAX2, VQ, VGLU), VEMB shift
        shc = Signal(signed(_SH))    # clamp(R[rc]): VQ t, VREC target shift
        fsh = [Signal(unsigned(7), name=f"fsh{k}") for k in range(2)]   # max(F - 16, 0), clamped
        fb = [Signal(range(11), name=f"fb{k}") for k in range(2)]       # min(F, 16) - 6
        sat_hi, sat_lo = Signal(signed(38)), Signal(signed(38))

        # ------------------------------------------------------------ element loop
        # Element e runs step k in cycle e * II + k of the RUN state. ph = cycle mod II; e_new is the
        # newest element started; the steps k = ph (mod II) run for element e_new - k // II. Each
        # step's code reads ``j``, rebound below to that element's index before the step is built.
        ph = Signal(range(32))
        e_new = Signal(17)
        j = None
        jl = Signal(range(lanes))           # lane and word of the next VQ code
        jw = Signal(16)

        # ------------------------------------------------------------ shared multiplier
        mul_a, mul_b = Signal(signed(MUL_A)), Signal(signed(MUL_B))
        P = Signal(signed(MUL_A + MUL_B))
        m.d.sync += P.eq(mul_a * mul_b)

        def mul(a, b):
            m.d.sync += [mul_a.eq(a), mul_b.eq(b)]

        # ------------------------------------------------------------ shared rounding shifter
        sh_x, sh_s, sh_r = Signal(signed(SHIFT_BITS)), Signal(signed(_SH)), Signal(signed(SHIFT_BITS))
        rs, ls = Signal(7), Signal(7)
        t_sh = Signal(signed(SHIFT_BITS))
        sticky = Signal()
        m.d.comb += [rs.eq(sh_s - 1), ls.eq(-sh_s), t_sh.eq(sh_x >> rs),
                     sticky.eq((sh_x.as_unsigned() & Cat(*[rs > i for i in range(SHIFT_BITS)])).any())]
        m.d.sync += sh_r.eq(Mux(sh_s > 0, (t_sh + (~sh_x[-1] | sticky)) >> 1, sh_x << ls))

        def shift(x, s):
            m.d.comb += [sh_x.eq(x), sh_s.eq(s)]

        # ------------------------------------------------------------ memories
        X = self.vmem_rd.data
        Cd = self.cmem_rd.data
        Sd = self.sig_rd.data

        def vrd(addr):
            m.d.comb += [self.vmem_rd.addr.eq(addr), self.vmem_rd.en.eq(1)]

        def crd(addr):
            m.d.comb += [self.cmem_rd.addr.eq(addr), self.cmem_rd.en.eq(1)]

        def srd(addr):
            m.d.comb += [self.sig_rd.addr.eq(addr), self.sig_rd.en.eq(1)]

        def satv(v):
            c = Mux(sat == 0, v, _clamp(v, sat_lo, sat_hi))
            return c[:VMEM_BITS].as_signed()

        # ------------------------------------------------------------ reductions
        mx = Signal(MUL_A + MUL_B + 1)      # max |written| / max |x| / max |z' C[a2]|
        mx_c = Signal(MUL_A + MUL_B + 1)    # max |z' C[a0]|
        acc = Signal(64)                    # sum of squares
        best = Signal(signed(VMEM_BITS))
        arg = Signal(16)

        def vwrite(v):
            """Write the saturated value v to x[a0 + j]; track max |written|."""
            w = Signal(signed(VMEM_BITS), name="w")
            aw = Signal(VMEM_BITS)
            m.d.comb += [w.eq(satv(v)), aw.eq(_abs(w)),
                         self.vmem_wr.addr.eq(a0 + j), self.vmem_wr.data.eq(w), self.vmem_wr.en.eq(1)]
            with m.If(aw > mx):
                m.d.sync += mx.eq(aw)

        def track(reg, v):
            a = Signal(len(reg), name=f"abs_{reg.name}")
            m.d.comb += a.eq(_abs(v))
            with m.If(a > reg):
                m.d.sync += reg.eq(a)

        # ------------------------------------------------------------ working registers
        zr = Signal(signed(SHIFT_BITS))
        x1 = Signal(signed(VMEM_BITS))

        def sig_regs(name):
            """The working registers of one sigmoid evaluation in flight."""
            return SimpleNamespace(t0=Signal(unsigned(_SIG_BITS), name=f"t0_{name}"),
                                   k1=Signal(11, name=f"k1_{name}"), fr=Signal(10, name=f"fr_{name}"),
                                   neg=Signal(name=f"neg_{name}"), sig=Signal(unsigned(17), name=f"sig_{name}"))
        SI, SF = sig_regs("i"), sig_regs("f")     # VREC evaluates sigmoid(i) and sigmoid(f) overlapped
        om = Signal(signed(SHIFT_BITS))
        sv = Signal(signed(VMEM_BITS))
        iv = Signal(signed(VMEM_BITS))
        negb = Signal()
        ya, sy = Signal(signed(SHIFT_BITS)), Signal(signed(SHIFT_BITS))

        def sigmoid(src, c, R, neg_r=None):
            """7 steps: R.sig <= sigmoid(src; F) (src read in the first step), F from config c; the
            sign is read in the last step from ``neg_r`` (default: ``R.neg``, written in step 1)."""
            neg_r = R.neg if neg_r is None else neg_r

            def g0():
                shift(src, fsh[c])

            def g1():
                ay = Signal(SHIFT_BITS, name="ay")
                a = Signal(21, name="sa")
                lim = Signal(21, name="slim")
                k = Signal(11, name="sk")
                m.d.comb += [ay.eq(_abs(sh_r)), lim.eq((Const(1, 22) << (fb[c] + 10)) - 1),
                             a.eq(Mux(ay > lim, lim, ay)), k.eq(a >> fb[c])]
                srd(k)
                m.d.sync += [R.k1.eq(k + 1), R.fr.eq(a & ((Const(1, 11) << fb[c]) - 1)), R.neg.eq(sh_r < 0)]

            def g2():
                srd(R.k1)
                m.d.sync += R.t0.eq(Sd)

            def g3():
                mul(Cat(Sd, Const(0, 1)).as_signed() - Cat(R.t0, Const(0, 1)).as_signed(), R.fr)

            def g4():
                pass

            def g5():
                shift(P, fb[c])

            def g6():
                d = Signal(signed(21), name="sd")
                p = Signal(18, name="sp")
                m.d.comb += [d.eq(R.t0 + sh_r), p.eq(_round_shift_const((1 << 17) + d, 2))]
                m.d.sync += R.sig.eq(Mux(neg_r, (1 << 16) - p, p))
            return [g0, g1, g2, g3, g4, g5, g6]

        def nop():
            pass

        def latch(reg, v):
            m.d.sync += reg.eq(v)

        # ------------------------------------------------------------ step lists
        prog = {}
        prog[Op.VSET] = [lambda: vwrite(imm)]
        prog[Op.VEMB] = [
            lambda: crd(rA + j),
            lambda: shift(Cd, -shz),
            lambda: vwrite(sh_r),
        ]

        def vadd1():
            vrd(a2 + j)
            m.d.sync += x1.eq(X)
        prog[Op.VADD] = [lambda: vrd(a1 + j), vadd1, lambda: vwrite(x1 + X)]
        prog[Op.VMAXABS] = [lambda: vrd(a1 + j), lambda: track(mx, X)]

        def argmax1():
            with m.If((j == 0) | (X > best)):
                m.d.sync += [best.eq(X), arg.eq(j)]
        prog[Op.VARGMAX] = [lambda: vrd(a1 + j), argmax1]

        def zstep1(caddr):
            shift(X, shz)
            crd(caddr)

        def zstep2():
            m.d.sync += zr.eq(sh_r)
            mul(sh_r, Cd)
            crd(a0 + j)

        def vnqa5():
            mul(sh_r, sh_r)
            track(mx_c, P)

        def vnqa7():
            m.d.sync += acc.eq(acc + P)
        prog[Op.VNQA] = [
            lambda: vrd(a1 + j),
            lambda: zstep1(a2 + j),
            zstep2,
            lambda: mul(zr, Cd),
            lambda: shift(P, 17),
            vnqa5,
            nop,
            vnqa7,
        ]
        prog[Op.VUMAX2] = [
            lambda: vrd(a1 + j),
            lambda: zstep1(a2 + j),
            zstep2,
            lambda: mul(zr, Cd),
            lambda: track(mx, P),
            lambda: track(mx_c, P),
        ]

        def vq8():
            c = Signal(signed(8), name="code")
            m.d.comb += c.eq(_clamp(sh_r, -127, 127))
            m.d.comb += [self.a_wr.addr.eq(Mux(a0[0], chunks_max, 0) + jw),
                         self.a_wr.data.eq(Cat(*([c] * lanes))),
                         self.a_wr.en.eq(Const(1, lanes) << jl)]
            with m.If(jl == lanes - 1):
                m.d.sync += [jl.eq(0), jw.eq(jw + 1)]
            with m.Else():
                m.d.sync += jl.eq(jl + 1)
        prog[Op.VQ] = [
            lambda: vrd(a1 + j),
            lambda: zstep1(a2 + j),
            lambda: mul(sh_r, Cd),
            nop,
            lambda: shift(P, shc),
            lambda: mul(sh_r, rA),
            nop,
            lambda: shift(P, 25),
            vq8,
        ]

        # VGLU, II = 4: shifter in steps 1, 4, 6, 11; multiplier in 4, 9, 14; SIGMEM in 2, 3;
        # VMEM reads in 0, 13 (distinct mod 4). Working registers live at most 4 steps (negb
        # carries the sign past the next element's step 2; ya and sy hold the shifted values).
        g = sigmoid(X, 0, SI, negb)        # g[0] shifts the word read in step 0

        def glu1():
            g[0]()                      # shift(y, F - 16)
            m.d.sync += x1.eq(X)

        def glu4():
            g[3]()                      # interpolation multiply
            shift(x1, shz)              # rshift(y, R[rb])
            m.d.sync += negb.eq(SI.neg)
        prog[Op.VGLU] = [
            lambda: vrd(a1 + j),
            glu1,
            g[1],
            g[2],
            glu4,
            lambda: latch(ya, sh_r),
            g[5],
            g[6],
            nop,
            lambda: mul(ya, SI.sig),
            nop,
            lambda: shift(P, 16),
            lambda: latch(sy, sh_r),
            lambda: vrd(a2 + j),
            lambda: mul(sy, X),
            nop,
            lambda: vwrite(P),
        ]

        # VREC, II = 8: shifter in steps 1, 3, 6, 8, 10, 12, 15; multiplier in 4, 6, 8, 10, 13;
        # SIGMEM in 2..5; VMEM reads in 0 (f), 2 (i), 12 (s); CMEM in 7 (distinct mod 8). The two
        # sigmoids have their own registers; every working register lives at most 8 steps.
        gf, gi = sigmoid(X, 1, SF), sigmoid(X, 0, SI)
        prog[Op.VREC] = [
            lambda: vrd(a2 + j),                                        # f
            gf[0],
            lambda: (gf[1](), vrd(a1 + j)),                             # i
            lambda: (gf[2](), gi[0](), latch(iv, X)),
            lambda: (gf[3](), gi[1]()),
            gi[2],
            lambda: (gf[5](), gi[3]()),
            lambda: (gf[6](), crd(imm + j)),                            # 1 - lb
            lambda: (mul((1 << 16) - SF.sig, Cd), gi[5]()),
            gi[6],
            lambda: (shift(P, 16), mul(iv, SI.sig)),                    # om; i * sigmoid(i)
            lambda: latch(om, sh_r),
            lambda: (shift(P, shc), vrd(a0 + j)),                       # target; s
            lambda: (mul(sh_r - X, om), latch(sv, X)),
            nop,
            lambda: shift(P, 16),
            lambda: vwrite(sv + sh_r),
        ]
        for o, steps in prog.items():
            assert len(steps) == ELEMENT_CYCLES[o] and 1 <= INTERVAL[o] <= len(steps), o

        # ------------------------------------------------------------ control
        is_vec = Signal()       # the offered instruction is a vector opcode with n > 0
        with m.Switch(self.cmd.payload.instr[0:6]):
            with m.Case(*[int(o) for o in prog]):
                m.d.comb += is_vec.eq(self.cmd.payload.instr[32:48] != 0)

        def clamp_sh(v):
            return _clamp(v, -127, 127)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(accept):
                    m.d.sync += [ir.eq(self.cmd.payload.instr), rA.eq(self.cmd.payload.ra),
                                 rB.eq(self.cmd.payload.rb), rC.eq(self.cmd.payload.rc),
                                 mx.eq(0), mx_c.eq(0), acc.eq(0), best.eq(0), arg.eq(0)]
                    with m.If(is_vec):
                        m.next = "SETUP"
                    with m.Else():
                        m.next = "DONE"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [shz.eq(clamp_sh(rB)), shc.eq(clamp_sh(rC)),
                             sat_hi.eq((Const(1, 38) << (sat - 1)[:6]) - 1),
                             sat_lo.eq(-(Const(1, 38) << (sat - 1)[:6])),
                             ph.eq(0), e_new.eq(0), jl.eq(0), jw.eq(0)]
                for k, F in enumerate((rA, rB)):
                    m.d.sync += [fsh[k].eq(_clamp(F - 16, 0, 127)), fb[k].eq(_clamp(F, 6, 16) - 6)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                last = Signal()
                with m.Switch(op):
                    for o, steps in prog.items():
                        ii, L = INTERVAL[o], len(steps)
                        with m.Case(int(o)):
                            with m.Switch(ph):
                                for r in range(ii):
                                    with m.Case(r):
                                        for k in range(r, L, ii):
                                            q = k // ii
                                            j = (e_new - q)[:16]      # the element at step k
                                            with m.If((e_new >= q) & (e_new - q < n)):
                                                steps[k]()
                            m.d.comb += last.eq((ph == (L - 1) % ii) & (e_new - (L - 1) // ii == n - 1))
                            with m.If(ph == ii - 1):
                                m.d.sync += [ph.eq(0), e_new.eq(e_new + 1)]
                            with m.Else():
                                m.d.sync += ph.eq(ph + 1)
                with m.If(last):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.busy.eq(1), self.result.done.eq(1)]
                with m.Switch(op):
                    with m.Case(Op.VEMB, Op.VADD, Op.VMAXABS, Op.VUMAX2, Op.VREC, Op.VGLU):
                        m.d.comb += [self.result.rd_we.eq(1), self.result.rd_data.eq(mx)]
                    with m.Case(Op.VNQA):
                        m.d.comb += [self.result.rd_we.eq(1), self.result.rd_data.eq(acc)]
                    with m.Case(Op.VARGMAX):
                        m.d.comb += [self.result.rd_we.eq(1), self.result.rd_data.eq(arg)]
                with m.Switch(op):
                    with m.Case(Op.VNQA, Op.VUMAX2):
                        m.d.comb += [self.result.rc_we.eq(rc_f != 0), self.result.rc_data.eq(mx_c)]
                m.next = "IDLE"
        return m
