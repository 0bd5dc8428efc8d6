"""The core's scalar unit: 32 x 54-bit registers and the scalar instructions of ``sw/isa.py``.

:class:`ScalarUnit` executes ``SLI``, ``SADD``, ``SSUB``, ``SMAXI``, ``SRSHI``, ``SRSHR``,
``SBLEN``, ``SZSEL``, ``SMUL``, ``SMULI``, ``SNORM``, ``SMANT16``, ``SRECIP`` and ``SRSQ`` bit for
bit as :class:`sw.isa_sim.Core` does (``docs/isa.md`` section 3; the function units of
``docs/arithmetic.md``). ``SLDC`` reads the constant memory, which belongs to the vector unit:
the sequencer executes it and writes the result through :attr:`ScalarUnit.write`. Any other
opcode is consumed in one cycle without effect.

Datapath: the register file (flip-flops, ``r0`` reads 0), one rounding shifter (54 bits, both
directions, rounding half away from zero or truncating), one leading-zero counter (a
``bit_length`` tree), one signed 18 x 18 multiplier (one ``MULT18X18D``, its operands from
registers) and the seed-table memory ``TMEM`` (18-bit words, one ``DP16KD`` at the default 1024
words), written through :attr:`ScalarUnit.tmem_w` with ``sw.program``'s ``tmem`` image.

Timing: an instruction is accepted in cycle ``t`` (``instr`` handshake), executes in cycles
``t + 1 .. t + L`` and writes its registers at the end of cycle ``t + L``; the next instruction
can be accepted in cycle ``t + L`` and reads the new values. ``L`` is :data:`LATENCY`, equal to
``sw.isa_sim.SCALAR_CYCLES`` for every scalar opcode, so a chain of dependent instructions runs
at exactly the cycle model's rate. Unlike the cycle model's fully pipelined unit, instructions do
not overlap: an independent instruction after a multi-cycle one also waits for it (the token
program's scalar chains are dependent, ``docs/isa.md`` section 7).

Multiplies:

* ``SMUL`` / ``SMULI``: each operand is 18-bit signed or unsigned, ``-2**17 <= a < 2**18`` (as the
  executor requires). It is split as ``a = a_lo + 2**17 a_hi`` with ``a_lo`` the low 17 bits
  (unsigned) and ``a_hi`` in {-1, 0, 1}; the multiplier computes ``a_lo * b_lo`` (17 x 17 unsigned
  on the signed 18 x 18 array) and the partial products ``2**17 (a_hi b_lo + b_hi a_lo) + 2**34
  a_hi b_hi`` are selected and negated operands, summed in the operand cycle and added to the
  multiplier's output in the second.
* ``SRECIP`` (``recip_norm``): ``mn * r0`` (16 x 17), ``r0 * round_shift(e, 8)`` (17 x 17 signed).
* ``SRSQ`` (``rsqrt_norm``): ``q0 * q0``, ``ms * t``, ``q0 * round_shift(e, 8)``.
  The seeds are read as 18-bit signed multiplier operands, so table entries must be below
  ``2**17`` (both seed tables are 17-bit: ``models.fixedpoint``), and the intermediates stay in 18
  bits for the shipped tables (checked exhaustively over both input ranges by the testbench).

Resources and timing, **measured** on the ECP5-85F (speed 6) in ``hw.pe.harness.StandaloneHarness``
(its own share: 100 LUT4, 631 FF), default parameters, with the synthesis script of
``bench.pe_sweep.measure`` (``yosys: synth_ecp5 -abc9``) and ``nextpnr-ecp5 --85k --package
CABGA381 --speed 6 --freq 75 --no-route --seed 1``: 14,882 LUT4 + 344 CCU2C (3,347 PFUMX, 725
L6MUX21), 2,553 FF, 1 MULT18X18D, 1 DP16KD after synthesis; 15,786 TRELLIS_COMB after packing;
**17.3 MHz** estimated after placement (not routed: ``measure(ScalarUnit(), "85f", workdir)``
did not finish routing within 20 minutes on a shared machine, two attempts). This first version
is verified but **not timing-closed for the 75 MHz system clock**. The slack histogram puts
about 1,600 endpoints (the register file's flip-flops) at -36 to -45 ns; the placer printed no
path, and by inspection the longest path into the register file is a one-cycle instruction's,
``SRSHR``: register-file read (32:1 multiplexer), shift-amount clamp, barrel shifter and sticky
bit, the 64-bit rounding increment, the result multiplexer and the register write. Reaching 75 MHz needs an operand-register stage and a shifter over two stages
(i.e. ``SCALAR_CYCLES`` of 2-3 for the shifts and one more for the normalisers), and a LUT-RAM
register file would cut most of the LUT4 (the flip-flop file with six 32:1 read multiplexers of 54
bits, three of them the external :attr:`read` ports, dominates the count).

Results outside 54 bits (which the executor rejects with ``OverflowError``) wrap around; inputs
the executor rejects (negative ``SBLEN`` / ``SNORM`` / ``SMANT16`` / ``SRSQ`` operands, ``SRECIP``
of a value that is not a 16-bit mantissa, multiplies beyond 18 bits) give unspecified results.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import INSTR_BITS, N_REGS, REG_BITS, TMEM_BITS, Op

__all__ = ["ScalarUnit", "LATENCY", "RegisterReadSignature", "RegisterWriteSignature", "RESULT_LAYOUT"]

#: Cycles from accepting an instruction to its result being usable by the next instruction
#: (the same as ``sw.isa_sim.SCALAR_CYCLES``); opcodes not listed take 1 cycle and write nothing.
LATENCY = {
    Op.SLI: 1, Op.SADD: 1, Op.SSUB: 1, Op.SMAXI: 1, Op.SRSHI: 1, Op.SRSHR: 1, Op.SBLEN: 1, Op.SZSEL: 1,
    Op.SMUL: 2, Op.SMULI: 2, Op.SNORM: 2, Op.SMANT16: 2, Op.SRECIP: 6, Op.SRSQ: 9,
}

_REG_ADDR = (N_REGS - 1).bit_length()

#: Payload of :attr:`ScalarUnit.result`: the registers an instruction wrote (``rd``; ``rc`` too
#: when ``rc_en``, which takes precedence when ``rc == rd``). ``r0`` is reported but not written.
RESULT_LAYOUT = data.StructLayout({
    "rd": unsigned(_REG_ADDR),
    "rd_data": signed(REG_BITS),
    "rc_en": unsigned(1),
    "rc": unsigned(_REG_ADDR),
    "rc_data": signed(REG_BITS),
})


class RegisterReadSignature(wiring.Signature):
    """A combinational register read port, seen from the reader: ``addr`` out, ``data`` in
    (the register's value in the same cycle; a write lands at the end of its cycle)."""

    def __init__(self):
        super().__init__({"addr": Out(_REG_ADDR), "data": In(signed(REG_BITS))})


class RegisterWriteSignature(wiring.Signature):
    """A register write port, seen from the writer: ``en``, ``addr``, ``data``."""

    def __init__(self):
        super().__init__({"en": Out(1), "addr": Out(_REG_ADDR), "data": Out(signed(REG_BITS))})


def _leading_one(v):
    """``(any, position of the leading one)`` of the unsigned value ``v`` (width a power of two),
    as a tree of halves: multiplexers only, no adders."""
    w = len(v)
    if w == 1:
        return v[0], Const(0, 0)
    h = w // 2
    any_hi, p_hi = _leading_one(v[h:])
    any_lo, p_lo = _leading_one(v[:h])
    return any_hi | any_lo, Cat(Mux(any_hi, p_hi, p_lo), any_hi)


def _bit_length(v):
    """``bit_length`` of the unsigned value ``v``: leading-one position + 1, or 0."""
    w = 1 << (len(v) - 1).bit_length()
    nz, pos = _leading_one(Cat(v, Const(0, w - len(v))))
    return Mux(nz, pos + 1, 0)


def _round_shift_const(v, s: int):
    """``round_shift(v, s)`` of a signed value by a constant ``s > 0`` (half away from zero)."""
    # floor(v / 2**(s-1)), plus one unless v < 0 and no 1 was shifted out, halved: no negation
    inc = ~v[-1] | v[:s - 1].any() if s > 1 else ~v[-1]
    return ((v >> (s - 1)) + inc) >> 1


def _unit_mux(sel, value):
    """``value`` negated, kept or zeroed by ``sel`` in {-1, 0, 1} (a 2-bit signed value)."""
    return Mux(sel == 0, 0, Mux(sel[1], -value, value))


class ScalarUnit(wiring.Component):
    """Scalar unit of the accelerator core (``docs/isa.md`` section 3).

    Parameters
    ----------
    table_depth : int
        Words of the seed-table memory ``TMEM`` (18-bit). The shipped programs place the
        reciprocal seeds (256) at 0 and the rsqrt seeds (384) at 256, so they need 640.
    read_ports : int
        Register read ports for the sequencer and the vector unit (latching scalar operands).

    Members
    -------
    instr : ``In(stream.Signature(unsigned(128)))``
        Instruction words, encoded as ``sw.isa.encode`` (only ``op``, ``rd``, ``ra``, ``rb``,
        ``rc`` and ``imm`` are used).
    result : ``Out(valid, payload=RESULT_LAYOUT)``
        One beat per scalar instruction, in the cycle its registers are written (a stream that is
        always ready: the sequencer's scoreboard releases ``rd`` / ``rc`` on it).
    read : ``In(RegisterReadSignature()).array(read_ports)``
        Register read ports.
    write : ``In(RegisterWriteSignature())``
        Register write port (token ``r1``, vector reductions, GEMV maxima, ``SLDC``). A write by
        the unit's own instruction to the same register in the same cycle takes precedence.
    tmem_w : ``In(addr, data, en)``
        ``TMEM`` write port.
    tmem_r : ``In(addr, data)``
        ``TMEM`` read-back (upload verification): ``data`` is the word at the ``addr`` of the
        previous cycle, valid while no instruction executes (``busy`` low).
    busy : ``Out(1)``
        An instruction is executing.
    """

    def __init__(self, table_depth: int = 1024, read_ports: int = 3):
        if not isinstance(table_depth, int) or isinstance(table_depth, bool) or not 1 <= table_depth <= 1 << 19:
            raise ValueError(f"table_depth must be an integer in 1..{1 << 19}, not {table_depth!r}")
        if not isinstance(read_ports, int) or isinstance(read_ports, bool) or not 0 <= read_ports <= 8:
            raise ValueError(f"read_ports must be an integer in 0..8, not {read_ports!r}")
        self._table_depth, self._read_ports = table_depth, read_ports
        self._taw = max(1, (table_depth - 1).bit_length())
        members = {
            "instr": In(stream.Signature(unsigned(INSTR_BITS))),
            "result": Out(wiring.Signature({"valid": Out(1), "payload": Out(RESULT_LAYOUT)})),
            "write": In(RegisterWriteSignature()),
            "tmem_w": In(wiring.Signature({"addr": Out(self._taw), "data": Out(TMEM_BITS), "en": Out(1)})),
            "tmem_r": In(wiring.Signature({"addr": Out(self._taw), "data": In(TMEM_BITS)})),
            "busy": Out(1),
        }
        if read_ports:
            members["read"] = In(RegisterReadSignature()).array(read_ports)
        super().__init__(members)

    table_depth = property(lambda self: self._table_depth, doc="Words of the seed-table memory.")
    read_ports = property(lambda self: self._read_ports, doc="Register read ports.")

    def elaborate(self, platform):  # noqa: C901 (one case per opcode)
        m = Module()
        W = REG_BITS

        # ---------------------------------------------------------------- state
        regs = Array(Signal(signed(W), name=f"r{i}") for i in range(N_REGS))
        ir = Signal(INSTR_BITS)
        ex = Signal()                       # an instruction is executing
        step = Signal(range(max(LATENCY.values())))
        op, rd, ra, rb, rc = ir[0:6], ir[12:17], ir[17:22], ir[22:27], ir[27:32]
        imm = ir[108:128].as_signed()

        lat = Signal(range(max(LATENCY.values()) + 1))
        with m.Switch(op):
            for o, n in LATENCY.items():
                with m.Case(int(o)):
                    m.d.comb += lat.eq(n)
            with m.Default():
                m.d.comb += lat.eq(1)
        last = Signal()
        m.d.comb += [last.eq(ex & (step == lat - 1)),
                     self.instr.ready.eq(~ex | last), self.busy.eq(ex)]
        with m.If(self.instr.valid & self.instr.ready):
            m.d.sync += [ir.eq(self.instr.payload), ex.eq(1), step.eq(0)]
        with m.Elif(last):
            m.d.sync += ex.eq(0)
        with m.Elif(ex):
            m.d.sync += step.eq(step + 1)

        A, B, C = Signal(signed(W)), Signal(signed(W)), Signal(signed(W))
        m.d.comb += [A.eq(regs[ra]), B.eq(regs[rb]), C.eq(regs[rc])]
        for port in (self.read if self._read_ports else []):
            m.d.comb += port.data.eq(regs[port.addr])

        # ---------------------------------------------------------------- write-back
        wd_en, wc_en = Signal(), Signal()
        wd_data, wc_data = Signal(signed(W)), Signal(signed(W))
        m.d.comb += [self.result.valid.eq(wd_en), self.result.payload.rd.eq(rd),
                     self.result.payload.rd_data.eq(wd_data), self.result.payload.rc_en.eq(wc_en),
                     self.result.payload.rc.eq(rc), self.result.payload.rc_data.eq(wc_data)]
        for i in range(1, N_REGS):
            with m.If(wc_en & (rc == i)):
                m.d.sync += regs[i].eq(wc_data)
            with m.Elif(wd_en & (rd == i)):
                m.d.sync += regs[i].eq(wd_data)
            with m.Elif(self.write.en & (self.write.addr == i)):
                m.d.sync += regs[i].eq(self.write.data)

        # ---------------------------------------------------------------- function units
        # Leading-zero counter (bit length of the non-negative operand A).
        bl = Signal(range(W + 1))
        m.d.comb += bl.eq(_bit_length(A.as_unsigned()))

        # Rounding shifter: round_shift(sh_x, sh_s), half away from zero (sh_rnd) or truncating
        # (non-negative sh_x only); sh_s <= 0 shifts left. On two's complement, without taking
        # the magnitude: with t = sh_x >> (s - 1) (arithmetic) and `sticky` = any of the s - 1
        # bits shifted out, round_shift = (t + (sh_x >= 0 or sticky)) >> 1; the truncating shift
        # is t >> 1. sh_s is 7-bit signed: shift amounts beyond it are saturated to -64 / 63,
        # where the result is the same (0 right; left: only x = 0 fits 54 bits).
        SH = 64                             # sign-extended operand width of the shifter
        sh_x, sh_s, sh_rnd, sh_out = Signal(signed(W)), Signal(signed(7)), Signal(), Signal(signed(W))
        rs, ls = Signal(6), Signal(7)
        xe = Signal(signed(SH))
        t_sh = Signal(signed(SH))
        sticky = Signal()
        m.d.comb += [xe.eq(sh_x), rs.eq(sh_s - 1), ls.eq(-sh_s), t_sh.eq(xe >> rs),
                     sticky.eq((xe.as_unsigned() & Cat(*[rs > i for i in range(SH)])).any()),
                     sh_out.eq(Mux(sh_s > 0, (t_sh + (sh_rnd & (~xe[SH - 1] | sticky))) >> 1, sh_x << ls))]

        def clamp_shift(v):
            """v saturated to 7 bits signed (v is signed, at least 7 bits)."""
            hi = v[6:]
            return Mux(hi.all() | ~hi.any(), v[:7], Mux(v[-1], -64, 63))

        # One signed 18 x 18 multiplier, operands from registers.
        mul_a, mul_b = Signal(signed(18)), Signal(signed(18))
        prod = Signal(signed(36))
        P = Signal(signed(37))
        m.d.comb += prod.eq(mul_a * mul_b)

        # Seed tables.
        m.submodules.tmem = tmem = memory.Memory(shape=unsigned(TMEM_BITS), depth=self._table_depth, init=[])
        t_rd = tmem.read_port()
        t_wr = tmem.write_port()
        m.d.comb += [t_wr.addr.eq(self.tmem_w.addr), t_wr.data.eq(self.tmem_w.data), t_wr.en.eq(self.tmem_w.en)]
        seed = t_rd.data.as_signed()        # entries < 2**17

        # Multi-cycle registers.
        x_r = Signal(signed(W))
        bl_r = Signal(range(W + 1))
        k_r = Signal(signed(8))
        ms_r = Signal(17)
        seed_r = Signal(signed(18))
        corr = Signal(signed(37))           # SMUL: the partial products beside a_lo * b_lo

        ms = Signal(17)                     # SRSQ mantissa (step 1, combinational)
        m.d.comb += [t_rd.addr.eq(Mux(ex, Mux(op == Op.SRSQ, imm + ms[7:16] - 128, imm + A[7:16] - 256),
                                      self.tmem_r.addr)),
                     self.tmem_r.data.eq(t_rd.data)]

        with m.If(ex):
            with m.Switch(op):
                with m.Case(Op.SLI):
                    m.d.comb += [wd_en.eq(1), wd_data.eq(imm)]
                with m.Case(Op.SADD):
                    m.d.comb += [wd_en.eq(1), wd_data.eq(A + B + imm)]
                with m.Case(Op.SSUB):
                    m.d.comb += [wd_en.eq(1), wd_data.eq(A - B + imm)]
                with m.Case(Op.SMAXI):
                    m.d.comb += [wd_en.eq(1), wd_data.eq(Mux(A > imm, A, imm))]
                with m.Case(Op.SRSHI, Op.SRSHR):
                    m.d.comb += [sh_x.eq(A), sh_s.eq(clamp_shift(Mux(op == Op.SRSHI, imm, B))),
                                 sh_rnd.eq(1), wd_en.eq(1), wd_data.eq(sh_out)]
                with m.Case(Op.SBLEN):
                    m.d.comb += [wd_en.eq(1), wd_data.eq(bl + imm)]
                with m.Case(Op.SZSEL):
                    m.d.comb += [wd_en.eq(1), wd_data.eq(Mux((A == 0) | (B == 0), 0, C))]
                with m.Case(Op.SMUL, Op.SMULI):
                    with m.If(step == 0):
                        b = Mux(op == Op.SMUL, B, imm)
                        a_hi, b_hi = A[17:19].as_signed(), b[17:19].as_signed()
                        cross = _unit_mux(a_hi, b[:17]) + _unit_mux(b_hi, A[:17])
                        hh = Mux((a_hi == 0) | (b_hi == 0), 0, Mux(a_hi[1] ^ b_hi[1], -1, 1))
                        m.d.sync += [corr.eq((cross << 17) + (hh.as_signed() << 34)),
                                     mul_a.eq(A[:17]), mul_b.eq(b[:17])]
                    with m.Else():
                        m.d.comb += [wd_en.eq(1), wd_data.eq(prod + corr)]
                with m.Case(Op.SNORM, Op.SMANT16):
                    with m.If(step == 0):
                        m.d.sync += [x_r.eq(A), bl_r.eq(bl)]
                    with m.Else():
                        m.d.comb += [sh_x.eq(x_r), wd_en.eq(1), wc_en.eq(1)]
                        with m.If(op == Op.SNORM):
                            e = Signal(signed(8))
                            m.d.comb += [e.eq(bl_r - 17), sh_s.eq(e), sh_rnd.eq(1)]
                            with m.If(x_r == 0):
                                m.d.comb += [wd_data.eq(0), wc_data.eq(0)]
                            with m.Elif(sh_out[17]):      # rounded up to 2**17
                                m.d.comb += [wd_data.eq(sh_out >> 1), wc_data.eq(e + 1)]
                            with m.Else():
                                m.d.comb += [wd_data.eq(sh_out), wc_data.eq(e)]
                        with m.Else():
                            t = Signal(signed(8))
                            m.d.comb += [t.eq(bl_r - 16), sh_s.eq(t), sh_rnd.eq(0), wc_data.eq(t),
                                         wd_data.eq(Mux(x_r == 0, 1 << 15, sh_out))]
                with m.Case(Op.SRECIP):
                    with m.Switch(step):
                        with m.Case(0):             # table address from mn
                            m.d.sync += x_r.eq(A)
                        with m.Case(1):             # r0
                            m.d.sync += [seed_r.eq(seed), mul_a.eq(x_r[:16]), mul_b.eq(seed)]
                        with m.Case(2, 4):
                            m.d.sync += P.eq(prod)
                        with m.Case(3):             # e = mn r0 - 2**32
                            m.d.sync += [mul_a.eq(seed_r),
                                         mul_b.eq(_round_shift_const(P - (1 << 32), 8))]
                        with m.Case(5):
                            m.d.comb += [wd_en.eq(1), wd_data.eq(seed_r - _round_shift_const(P, 24))]
                with m.Case(Op.SRSQ):
                    with m.Switch(step):
                        with m.Case(0):
                            m.d.sync += [x_r.eq(A), bl_r.eq(bl)]
                        with m.Case(1):             # k even, ms = ss >> k; table address from ms
                            k = Signal(signed(8))
                            m.d.comb += [k.eq(bl_r - 16), sh_x.eq(x_r), sh_s.eq(k + k[0]), sh_rnd.eq(0),
                                         ms.eq(Mux(x_r == 0, 1 << 14, sh_out))]
                            m.d.sync += [ms_r.eq(ms), k_r.eq(sh_s)]
                        with m.Case(2):             # q0
                            m.d.sync += [seed_r.eq(seed), mul_a.eq(seed), mul_b.eq(seed)]
                        with m.Case(3, 5, 7):
                            m.d.sync += P.eq(prod)
                        with m.Case(4):             # t = round_shift(q0 q0, 16)
                            m.d.sync += [mul_a.eq(ms_r), mul_b.eq(_round_shift_const(P, 16))]
                        with m.Case(6):             # e = ms t - 2**30
                            m.d.sync += [mul_a.eq(seed_r),
                                         mul_b.eq(_round_shift_const(P - (1 << 30), 8))]
                        with m.Case(8):
                            m.d.comb += [wd_en.eq(1), wc_en.eq(1), wc_data.eq(k_r),
                                         wd_data.eq(seed_r - _round_shift_const(P, 23))]
        return m
