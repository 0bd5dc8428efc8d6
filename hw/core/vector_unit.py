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

Datapath: each opcode is a list of steps (one cycle each) that one element goes through. Every
multiply and every rounding shift of a step list has its own unit (units are shared only between
opcodes, which never run at the same time), so the interval of an opcode is set by its memory
ports alone. Units (all operands signed):

* ``MZ1``, ``MZ2`` -- ``MUL_A`` x 18: ``z' * C[a2]`` and ``z' * C[a0]`` (``VNQA``, ``VUMAX2``,
  ``VQ``: the CMEM word is 18 bits), ``rshift(y, R[rb]) * sigmoid(y)`` (``VGLU``) and
  ``i * sigmoid(i)`` (``VREC``; the sigmoid output is 17 bits unsigned), and
  ``(1 - lb) * (2**16 - sigmoid(f))`` (``VREC``, 18 x 18 in value).
* ``MW`` -- ``MUL_A`` x ``MUL_B``: ``v * v`` (``VNQA``), ``rshift(u, R[rc]) * R[ra]`` (``VQ``),
  ``sy * x[a2]`` (``VGLU``), ``om * (target - s)`` (``VREC``).
* ``MUL_A`` (44) and ``MUL_B`` (37) are not narrowed further: they bound the exactness domain
  (below), which the bench exercises with full 36-bit words (``z'`` of a 36-bit word shifted by
  0, ``v`` of 37 bits squared, ``om`` and ``target - s`` of ``VREC``).
* one 19 x 11 interpolation multiplier per sigmoid unit (``SIGMEM[k + 1] - SIGMEM[k]``, 19 bits
  signed, times the fraction, at most 10 bits): exact for any table contents.
* rounding shifters (``round_shift`` half away from zero by a signed amount; ``<= 0`` is an exact
  left shift, ``>= SHIFT_BITS`` gives 0): ``SZ`` (``z'``, ``VEMB``'s left shift, ``rshift(y,
  R[rb])``), ``ST`` (``R[rc]`` shifts of ``VQ`` and ``VREC``), the input rescale (``F - 16``) of
  each sigmoid unit, all ``SHIFT_BITS`` wide; a 30-bit interpolation shifter (by ``F - 6``) per
  sigmoid unit; and registered rounding shifts by the constants 16, 17 and 25.

Every multiplier has registered operands and a registered product, plus a second product
register when it is wider than 18 x 18 (all of ``MZ1``, ``MZ2``, ``MW`` and the 19 x 11 ones):
operands set in step ``k`` give the product in step ``k + 3``. Every shifter is one registered
stage (result in step ``k + 1``). The sigmoid (``Core._sigmoid``: optional rescale to 16
fractional bits, clamp, table index and fraction, two table reads, interpolation multiply and
shift, odd symmetry) is a unit of its own, two of them (F from ``R[ra]``: ``VGLU``, ``VREC``'s
``i``; F from ``R[rb]``: ``VREC``'s ``f``), with its input in step ``s``, the SIGMEM reads in
``s + 2`` and ``s + 3`` and the result in ``s + 9``. Values carried between steps of an element
go through free-running delay registers (one per cycle of distance), so the step lists are
modulo-scheduled: element ``e`` runs step ``k`` in cycle ``e * II + k`` of the run,
``II = INTERVAL[op]``; steps of the elements in flight at the same time never share a memory
port, and elements finish in order. The reductions (max ``|written|``, sum of squares, max,
argmax) are registers updated in one step (from a registered absolute value for the products).

Cycles, measured by ``sim/tb_vector_unit.py`` (accepted in cycle ``t``, ``done`` in cycle
``t + cycles(op, n)`` = ``t + OVERHEAD + (n - 1) * INTERVAL[op] + ELEMENT_CYCLES[op]``; the
testbench asserts it for every instruction)::

    opcode    cycles per element (II)          steps per element (depth)
    VSET      1                                2
    VEMB      1                                4
    VADD      2  (two VMEM reads)              5
    VMAXABS   1                                3
    VARGMAX   1                                2
    VNQA      2  (two CMEM reads: a2, a0)      10
    VUMAX2    2  (two CMEM reads: a2, a0)      8
    VQ        1                                12
    VGLU      2  (two VMEM reads; two SIGMEM)  19
    VREC      4  (four SIGMEM reads; 3 VMEM)   23
    fixed: OVERHEAD = 2 cycles (one set-up cycle and the done cycle)

The intervals are the floors of the one read port per memory: ``VNQA`` and ``VUMAX2`` read
``C[a2]`` and ``C[a0]`` per element (also for ``rc = 0``: the cycle count does not depend on the
fields), ``VGLU`` reads ``x[a1]`` and ``x[a2]``, and ``VREC`` evaluates two sigmoids of two
SIGMEM reads each (its three VMEM reads alone would allow 3).

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

Timing (aimed at 75 MHz on the ECP5, not yet placed): registered multiplier operands and products
(two product stages above 18 x 18), one registered stage per variable shift. Multipliers: two
44 x 18, one 44 x 37, two 19 x 11 (about 6 + 9 + 4 ``MULT18X18D``). The sigmoid's absolute
value, its clamp and index, the ``VADD`` and ``VREC`` sums, the saturation of a written value, the
clamp of a ``VQ`` code and the absolute values of reduced values are stages of their own. Still more than one wide
operation in a stage: each variable shifter (barrel shift, sticky OR, one rounding add).
"""

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import REG_BITS, VMEM_BITS, Op

from .ports import UNIT_CMD_LAYOUT, MemReadSignature, MemWriteSignature, UnitResultSignature

__all__ = ["VectorUnit", "ELEMENT_CYCLES", "INTERVAL", "OVERHEAD", "cycles", "MUL_A", "MUL_B", "SHIFT_BITS"]

#: Steps (cycles) of one element of each vector opcode.
ELEMENT_CYCLES = {
    Op.VSET: 2, Op.VEMB: 4, Op.VADD: 5, Op.VMAXABS: 3, Op.VARGMAX: 2,
    Op.VNQA: 10, Op.VUMAX2: 8, Op.VQ: 12, Op.VGLU: 19, Op.VREC: 23,
}
#: Cycles between the starts of consecutive elements (the step lists are modulo-scheduled: no
#: two steps in the same residue class use the same memory port; every multiplier and shifter is
#: used in one step of an element, and values between steps travel in delay registers).
INTERVAL = {
    Op.VSET: 1, Op.VEMB: 1, Op.VADD: 2, Op.VMAXABS: 1, Op.VARGMAX: 1,
    Op.VNQA: 2, Op.VUMAX2: 2, Op.VQ: 1, Op.VGLU: 2, Op.VREC: 4,
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
    """Vector unit of the accelerator core (``docs/isa.md``), elements pipelined.

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

        # ------------------------------------------------------------ pipeline registers
        # Every stage register below is written in every cycle (``free``, added at the top level),
        # so a value seen in step k of an element is ``dly(value, d)`` in its step k + d, whatever
        # the interval. The steps only drive unit inputs, memory ports, writes and reductions.
        free = []

        def reg(v, name, shape=None):
            r = Signal(Value.cast(v).shape() if shape is None else shape, name=name)
            free.append(r.eq(v))
            return r

        def dly(v, d, name="dly"):
            v = Value.cast(v)
            for i in range(d):
                v = reg(v, f"{name}{i}")
            return v

        # ------------------------------------------------------------ multipliers
        def mul_unit(name, wa, wb):
            """Signed wa x wb multiplier: registered operands and product; products wider than
            18 x 18 get a second output register. Operands set in step k, product in step k + lat."""
            a, b = Signal(signed(wa), name=f"{name}_a"), Signal(signed(wb), name=f"{name}_b")
            ra, rb = reg(a, f"{name}_ra"), reg(b, f"{name}_rb")
            p = reg(ra * rb, f"{name}_p")
            lat = 2
            if wa > 18 or wb > 18:
                p, lat = reg(p, f"{name}_p2"), 3

            def set_(x, y):
                m.d.comb += [a.eq(x), b.eq(y)]
            return SimpleNamespace(set=set_, p=p, lat=lat)

        MZ1 = mul_unit("mz1", MUL_A, _CMEM_BITS)   # z' C[a2]; i sigmoid(i); rshift(y) sigmoid(y)
        MZ2 = mul_unit("mz2", MUL_A, _CMEM_BITS)   # z' C[a0]; (1 - lb)(1 - sigmoid(f))
        MW = mul_unit("mw", MUL_A, MUL_B)          # v v; rshift(u, t) R[ra]; sy x; om (target - s)

        # ------------------------------------------------------------ rounding shifters
        def shift_unit(name, bits):
            """round_shift by a signed amount (``<= 0``: exact left shift): input and amount set in
            step k, registered result in step k + 1."""
            x, s = Signal(signed(bits), name=f"{name}_x"), Signal(signed(_SH), name=f"{name}_s")
            rs, ls = Signal(7, name=f"{name}_rs"), Signal(7, name=f"{name}_ls")
            t = Signal(signed(bits), name=f"{name}_t")
            sticky = Signal(name=f"{name}_sticky")
            r = Signal(signed(bits), name=f"{name}_r")
            m.d.comb += [rs.eq(s - 1), ls.eq(-s), t.eq(x >> rs),
                         sticky.eq((x.as_unsigned() & Cat(*[rs > i for i in range(bits)])).any())]
            free.append(r.eq(Mux(s > 0, (t + (~x[-1] | sticky)) >> 1, x << ls)))

            def set_(v, a):
                m.d.comb += [x.eq(v), s.eq(a)]
            return SimpleNamespace(set=set_, r=r, x=x, s=s)

        SZ = shift_unit("sz", SHIFT_BITS)   # z' = rshift(x, R[rb]); VEMB's left shift; rshift(y, R[rb])
        ST = shift_unit("st", SHIFT_BITS)   # rshift(u, R[rc]) (VQ); target shift (VREC)

        def cshift(v, s, name):
            """Registered round_shift by the constant s (result one step after v)."""
            return reg(_round_shift_const(v, s), name, signed(SHIFT_BITS))

        c17 = cshift(MZ1.p, 17, "c17")      # VNQA: v = rshift(z' C[a2], 17)
        c16z1 = cshift(MZ1.p, 16, "c16z1")  # VGLU: sy
        c16z2 = cshift(MZ2.p, 16, "c16z2")  # VREC: om
        c16w = cshift(MW.p, 16, "c16w")     # VREC: rshift(om (target - s), 16)
        c25 = cshift(MW.p, 25, "c25")       # VQ

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
            """Write v of the previous step, saturated (a stage of its own), to x[a0 + j]; track
            max |written|."""
            w = reg(satv(v), "w", signed(VMEM_BITS))
            aw = reg(_abs(satv(v)), "aw", unsigned(VMEM_BITS))
            m.d.comb += [self.vmem_wr.addr.eq(a0 + j), self.vmem_wr.data.eq(w), self.vmem_wr.en.eq(1)]
            with m.If(aw > mx):
                m.d.sync += mx.eq(aw)

        # ------------------------------------------------------------ sigmoid units
        def sigmoid_unit(c):
            """``Core._sigmoid`` with F from config c, its own shifters and interpolation multiplier.
            ``start(y)`` in step s, ``rd0()`` in s + 2, ``rd1()`` in s + 3 (the two SIGMEM reads);
            the result ``out`` (uQ0.16, 17 bits) is valid in step s + 9."""
            SH = shift_unit(f"sg{c}_in", SHIFT_BITS)                 # s: rshift(y, F - 16)
            m.d.comb += SH.s.eq(fsh[c])
            ay = reg(_abs(SH.r), f"sg{c}_ay", unsigned(SHIFT_BITS))  # s + 1: |y|, sign
            neg = reg(SH.r < 0, f"sg{c}_neg")
            a = Signal(21, name=f"sg{c}_a")
            lim = Signal(21, name=f"sg{c}_lim")
            k = Signal(11, name=f"sg{c}_k")
            m.d.comb += [lim.eq((Const(1, 22) << (fb[c] + 10)) - 1),
                         a.eq(Mux(ay > lim, lim, ay)), k.eq(a >> fb[c])]
            k1 = reg(k + 1, f"sg{c}_k1", 11)                         # s + 2: clamp, index, fraction
            fr = reg(a & ((Const(1, 11) << fb[c]) - 1), f"sg{c}_fr", 10)
            t0 = reg(Sd, f"sg{c}_t0")                                # s + 3: SIGMEM[k]
            MI = mul_unit(f"sg{c}_mi", _SIG_BITS + 1, 11)            # s + 4: (t1 - t0) fr
            MI.set(Cat(Sd, Const(0, 1)).as_signed() - Cat(t0, Const(0, 1)).as_signed(),
                   dly(fr, 1, f"sg{c}_frd"))
            SI = shift_unit(f"sg{c}_fb", _SIG_BITS + 1 + 11)         # s + 4 + lat: rshift(., fb)
            SI.set(MI.p, fb[c])
            d = Signal(signed(21), name=f"sg{c}_d")
            p = Signal(18, name=f"sg{c}_p")
            at = 4 + MI.lat + 1                                      # step of the shifted product
            m.d.comb += [d.eq(dly(t0, at - 4, f"sg{c}_t0d") + SI.r), p.eq(_round_shift_const((1 << 17) + d, 2))]
            out = reg(Mux(dly(neg, at - 2, f"sg{c}_negd"), (1 << 16) - p, p), f"sg{c}_out", unsigned(17))

            def start(y):
                m.d.comb += SH.x.eq(y)
            return SimpleNamespace(start=start, rd0=lambda: srd(k), rd1=lambda: srd(k1), out=out,
                                   RD0=2, RD1=3, LAT=at + 1)

        SG0, SG1 = sigmoid_unit(0), sigmoid_unit(1)   # F = R[ra] (VGLU, VREC i); F = R[rb] (VREC f)
        LS = SG0.LAT
        assert LS == 9

        def nop():
            pass

        def sched(length, at):
            """The step list of ``length`` steps running the callables ``at[k]`` (one or a tuple) in step k."""
            def run(fs):
                return lambda: [f() for f in (fs if isinstance(fs, tuple) else (fs,))]
            return [run(at[k]) if k in at else nop for k in range(length)]

        def track_abs(reg_, a):
            with m.If(a > reg_):
                m.d.sync += reg_.eq(a)

        def absreg(v, name):
            """|v|, registered (read one step after v)."""
            return reg(_abs(v), name, unsigned(MUL_A + MUL_B + 1))

        # ------------------------------------------------------------ step lists
        # Step k of an element runs in cycle e * II + k. Each unit (multiplier, shifter, sigmoid
        # unit) is used in one step of an element; the memory ports in steps of distinct residues
        # mod II. A product set in step k is read in step k + 3 (all three are wider than 18 x 18).
        assert MZ1.lat == MZ2.lat == MW.lat == 3
        prog = {}
        prog[Op.VSET] = [nop, lambda: vwrite(imm)]
        prog[Op.VEMB] = [
            lambda: crd(rA + j),
            lambda: SZ.set(Cd, -shz),
            nop,
            lambda: vwrite(SZ.r),
        ]

        def vadd1():
            vrd(a2 + j)
            m.d.sync += x1.eq(X)
        x1 = Signal(signed(VMEM_BITS))
        vsum = reg(x1 + X, "vsum")      # x1 + x[a2] of step 2, in step 3
        prog[Op.VADD] = [lambda: vrd(a1 + j), vadd1, nop, nop, lambda: vwrite(vsum)]
        ax = reg(_abs(X), "ax")         # |x| of step 1, in step 2
        prog[Op.VMAXABS] = [lambda: vrd(a1 + j), nop, lambda: track_abs(mx, ax)]

        def argmax1():
            with m.If((j == 0) | (X > best)):
                m.d.sync += [best.eq(X), arg.eq(j)]
        prog[Op.VARGMAX] = [lambda: vrd(a1 + j), argmax1]

        def z1(caddr):          # step 1: z' = rshift(x, R[rb]); read C[caddr]
            SZ.set(X, shz)
            crd(caddr)

        def z2(caddr=None):     # step 2: z' C[a2]; read C[a0]
            MZ1.set(SZ.r, Cd)
            if caddr is not None:
                crd(caddr)

        def sq_acc():
            m.d.sync += acc.eq(acc + MW.p)

        # VNQA, II = 2 (two CMEM reads per element: C[a2] in step 1, C[a0] in step 2)
        prog[Op.VNQA] = sched(10, {
            0: lambda: vrd(a1 + j),
            1: lambda: z1(a2 + j),
            2: lambda: z2(a0 + j),
            3: lambda: MZ2.set(dly(SZ.r, 1, "zrd"), Cd),
            6: lambda: MW.set(c17, c17),                     # c17 = rshift(MZ1.p, 17) of step 5
            7: lambda: track_abs(mx_c, absreg(MZ2.p, "amz2n")),
            9: lambda: sq_acc(),
        })
        prog[Op.VUMAX2] = sched(8, {
            0: lambda: vrd(a1 + j),
            1: lambda: z1(a2 + j),
            2: lambda: z2(a0 + j),
            3: lambda: MZ2.set(dly(SZ.r, 1, "zru"), Cd),
            6: lambda: track_abs(mx, absreg(MZ1.p, "amz1u")),
            7: lambda: track_abs(mx_c, absreg(MZ2.p, "amz2u")),
        })

        code = reg(_clamp(c25, -127, 127), "code", signed(8))   # c25 of step 10, clamped, in step 11

        def vq11():
            c = code
            m.d.comb += [self.a_wr.addr.eq(Mux(a0[0], chunks_max, 0) + jw),
                         self.a_wr.data.eq(Cat(*([c] * lanes))),
                         self.a_wr.en.eq(Const(1, lanes) << jl)]
            with m.If(jl == lanes - 1):
                m.d.sync += [jl.eq(0), jw.eq(jw + 1)]
            with m.Else():
                m.d.sync += jl.eq(jl + 1)

        # VQ, II = 1
        prog[Op.VQ] = [
            lambda: vrd(a1 + j),
            lambda: z1(a2 + j),
            z2,
            nop,
            nop,
            lambda: ST.set(MZ1.p, shc),      # rshift(u, R[rc])
            lambda: MW.set(ST.r, rA),
            nop,
            nop,
            nop,                             # MW.p; c25 in step 10
            nop,                             # the code clamped
            vq11,
        ]

        # VGLU, II = 2: VMEM reads in steps 0 (y) and 13 (x), SIGMEM in 3 and 4.
        g = 1 + LS                                              # sigmoid(y) valid
        assert (g + 3) % 2 == 1
        prog[Op.VGLU] = sched(g + 9, {
            0: lambda: vrd(a1 + j),
            1: lambda: (SG0.start(X), SZ.set(X, shz)),          # rshift(y, R[rb]) in step 2
            1 + SG0.RD0: SG0.rd0,
            1 + SG0.RD1: SG0.rd1,
            g: lambda: MZ1.set(dly(SZ.r, g - 2, "ya"), SG0.out),
            g + 3: lambda: vrd(a2 + j),                         # MZ1.p; sy = c16z1 in step g + 4
            g + 4: lambda: MW.set(c16z1, X),
            g + 8: lambda: vwrite(MW.p),                        # MW.p of step g + 7
        })

        # VREC, II = 4: VMEM reads in steps 0 (f), 2 (i), 15 (s); SIGMEM in 3, 4 (f) and 5, 6 (i);
        # CMEM in 9 (distinct mod 4).
        gf, gi = 1 + LS, 3 + LS                                 # sigmoid(f), sigmoid(i) valid
        assert gi + 3 == 15 and 1 + SG1.RD0 == 3
        sv = Signal(signed(SHIFT_BITS + 1), name="snew")

        def rec_sum():                                          # s + rshift(om (target - s), 16)
            m.d.sync += sv.eq(dly(X, 4, "sv") + c16w)
        prog[Op.VREC] = sched(gi + 11, {
            0: lambda: vrd(a2 + j),                             # f
            1: lambda: SG1.start(X),
            2: lambda: vrd(a1 + j),                             # i
            1 + SG1.RD0: lambda: (SG1.rd0(), SG0.start(X)),
            1 + SG1.RD1: SG1.rd1,
            3 + SG0.RD0: SG0.rd0,
            3 + SG0.RD1: SG0.rd1,
            gf - 1: lambda: crd(imm + j),                       # 1 - lb
            gf: lambda: MZ2.set((1 << 16) - SG1.out, Cd),       # om = c16z2 in step gf + 4
            gi: lambda: MZ1.set(dly(X, gi - 3, "iv"), SG0.out),  # i sigmoid(i)
            gi + 3: lambda: (ST.set(MZ1.p, shc), vrd(a0 + j)),  # target; s
            gi + 4: lambda: MW.set(dly(ST.r, 0, "tg") - X, dly(c16z2, gi - gf, "om")),
            gi + 8: rec_sum,                                    # c16w of MW.p (step gi + 7)
            gi + 10: lambda: vwrite(sv),
        })
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
        m.d.sync += free
        return m
