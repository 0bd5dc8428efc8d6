"""The GEMV output stage of the core: rescale, saturate, residual add and VMEM write.

:class:`GemvWriteback` takes a ``GEMV`` instruction (``sw.isa`` ``Op.GEMV``) with the values of
``R[ra]`` (scale) and ``R[rb]`` (shift), consumes the ``groups`` beats of the engine's output
stream (:class:`hw.gemv.GemvEngine` ``o``: beat ``g`` holds outputs ``g * rows .. g * rows + rows
- 1``) and writes VMEM for every output ``m < n`` exactly as ``sw.isa_sim.Core._gemv`` does after
the accumulation::

    y = acc if raw else round_shift(acc * scale, shift)
    if residual: y = x[a0 + m] + (clip(y, sat) if sat else y)       (read-modify-write)
    x[a0 + m] = clip(y, sat) if sat else y;        R[rd] = max |written| (0 when n = 0)

``round_shift`` is ``sw.isa_sim.rshift``: round half away from zero, ``shift <= 0`` an exact left
shift, a huge shift gives 0. Outputs ``m >= n`` are consumed and dropped (a beat whose first output
is at or beyond ``n`` is taken in one cycle).

Ranges (checked by the testbench at the extremes):

* ``acc``: ``acc_width``-bit signed (the engine's accumulator, ``hw.pe.adder_tree.acc_width``).
* ``scale``: the low 18 bits of ``R[ra]``, signed: ``-2**17 <= scale < 2**17`` (the programs use
  a non-negative 17-bit mantissa). The product ``acc * scale`` is exact in ``acc_width + 18``
  bits (``P``).
* ``shift``: all of ``R[rb]`` (54-bit signed). It is clamped to ``[-Y, P + 1]`` with ``Y = 38``:
  any ``shift >= P + 1`` rounds every product to 0, and any ``shift <= -Y`` takes every non-zero
  product beyond ``Y`` bits, where only its sign matters (see below).
* ``raw`` mode uses ``scale = 1``, ``shift = 0`` (``R[ra]`` and ``R[rb]`` are ignored).
* ``y`` is clamped to ``Y = 38`` signed bits before the saturation and the residual add. That is
  exact for every program the executor accepts: with ``sat`` the value is clipped to at most 36
  bits anyway; without it the written word must fit 36 bits (the executor raises
  ``OverflowError`` otherwise), so ``y`` fits 36 bits, or 37 in residual mode (``x`` and
  ``x + y`` both fit 36). For a program the executor rejects (a written value beyond the 36-bit
  word), the word written is the low 36 bits of a clamped value: unspecified, not checked.

Pipeline (``lanes`` outputs per cycle in identical lanes, 1, 2 or 4; the core uses 4; never
stalls; the beat buffer is the only back-pressure point)::

    issue   outputs r .. r + lanes - 1 of the buffered beat -> acc registers; addresses a0 + m ..
    S1      p = acc * scale                                   (multiplier, registered)
    S2      t = p >> (shift - 1) (arithmetic, one variable shifter over P + Y + 1 bits,
            VMEM read of x[a0 + m] issued (residual; READ_LATENCY = 3: its data arrives in S5),
            left for shift <= 0), sticky = any bit shifted out below the rounding bit
    S3      y = (t + (p >= 0 or sticky)) >> 1                 (round half away from zero)
    S4      clip y to sat bits (or clamp to Y bits)
    S5      z = x[a0 + m] + y  (residual) or y
    S6      clip z to sat bits -> VMEM write ports (registered: the writes happen in S7)
    S7/S8   |written| of every lane -> running maximum (four lanes: S8 the larger of each
            pair, S9 the running maximum)

Lane ``k`` takes output ``r + k`` while the beat and the command have that many outputs left; its
VMEM word ``a0 + m + k`` is in another VMEM bank than the other lanes' (``hw.core.ports.BankedMemory``:
consecutive words, ``lanes`` banks), so all reads and all writes of a cycle are served together.

The shift amount, the sticky mask and the saturation masks and limits are decoded from the
latched instruction in the two cycles after the command is accepted (no output reaches S2
earlier). A beat is accepted while the buffer is empty or its last outputs are being issued, so a
beat of ``rows`` outputs is taken every ``ceil(rows / lanes)`` cycles (the engine produces one
every ``chunks`` cycles); a beat of dropped outputs takes one cycle.

Timing, measured by ``sim/tb_gemv_writeback.py`` (no stalls): command accepted in cycle ``c``,
``busy`` from ``c + 1``; the first beat can be accepted in ``c + 1``. With the last beat accepted
in cycle ``b`` and its outputs issued over ``k`` cycles (``1 <= k <= ceil(rows / lanes)``), the
last VMEM write is in cycle ``b + k + 7`` and ``done`` in cycle ``b + k + 9`` (``+ 10`` with four
lanes); with no output written after the last beat (``n`` ended in an earlier beat, or ``n = 0``)
``done`` is at ``b + 9`` (``+ 10``) at most (when earlier outputs are still in the pipeline),
``b + 1`` with an empty pipeline. A new command can be accepted in the cycle after ``done``.
Steady state: ``lanes`` outputs per cycle, one beat per ``ceil(rows / lanes)`` cycles. With the
beats offered without gaps, a command of ``n = groups * rows`` takes exactly
:meth:`GemvWriteback.cycles` = ``groups * ceil(rows / lanes) + 10`` cycles (``+ 11`` with four
lanes) from its accept to ``done`` (measured with two lanes: 14, 18, 38 and 74 cycles for 1, 2, 7
and 16 groups of 8 rows; the testbench asserts the formula for 1, 2 and 4 lanes, and ``<=`` it for
every command sent back to back). The engine produces a beat every ``chunks`` cycles, so for
``chunks < ceil(rows / lanes)`` this stage back-pressures it.

VMEM is outside: the core's registered read ports (``data`` ``READ_LATENCY`` = 3 cycles after
``en``, ``hw.core.ports``) and write ports, one of each per lane.
Within one command every output address is distinct, and the next command's first read comes
after this command's last write, so no read-after-write bypass is needed.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import FIELDS, REG_BITS, VMEM_BITS

from .ports import READ_LATENCY, UNIT_CMD_LAYOUT, MemReadSignature, MemWriteSignature, UnitResultSignature

__all__ = ["GemvWriteback", "Y_BITS", "LATENCY"]

#: Width to which the rescaled output is clamped before saturation and the residual add.
Y_BITS = VMEM_BITS + 2
#: Cycles from an output's issue (taken from the beat buffer) to its VMEM write.
LATENCY = 7

_F = {name: (lsb, width) for name, lsb, width, _ in FIELDS}
_IMM_RAW, _IMM_RESIDUAL = 16, 17


def _field(word, name):
    lsb, width = _F[name]
    return word[lsb:lsb + width]


def _check_pos_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def _fits_mask(v, mask):
    """``v`` (signed) has every bit selected by ``mask`` equal to its sign."""
    sign = v[-1]
    return ((v.as_unsigned() ^ sign.replicate(len(v))) & mask) == 0


class GemvWriteback(wiring.Component):
    """Output stage of the GEMV instruction (see the module docstring for semantics and timing).

    Parameters
    ----------
    rows : int
        Outputs per engine beat (the engine's ``rows``).
    acc_width : int
        Width of the engine's signed accumulators (``hw.pe.adder_tree.acc_width(k_max)``; 21
        holds ``k_max <= 8191``).
    vmem_depth : int
        VMEM words; the address width is ``ceil(log2(vmem_depth))`` (at least 1). Addresses
        ``a0 + m`` wrap modulo ``2**address_width``.
    lanes : int
        Outputs per cycle (1, 2 or 4), each with its VMEM read and write port: the words of one
        cycle are consecutive, so they lie in different banks of a VMEM of ``lanes`` banks.

    Members
    -------
    cmd : ``In(stream.Signature(UNIT_CMD_LAYOUT))``
        The GEMV instruction word and ``R[ra]`` (scale), ``R[rb]`` (shift); ``rc`` is unused.
        Accepted while idle (``ready = ~busy``).
    i : ``In(stream.Signature(ArrayLayout(signed(acc_width), rows)))``
        The engine's output beats; exactly ``groups`` (``a2``) are consumed per command.
    vmem_rd, vmem_rd2, .. : ``Out(MemReadSignature(address_width, signed(36)))``
        Residual-mode reads of the destination, one per lane (lane ``k`` reads the ``k``-th word
        after lane 0's, in the same cycle, or nothing).
    vmem_wr, vmem_wr2, .. : ``Out(MemWriteSignature(address_width, signed(36)))``
        One write per output ``m < n``, by the lane that issued it (lane ``k``: the ``k``-th word
        after lane 0's).
    result : ``Out(UnitResultSignature())``
        ``done`` once all beats are consumed and all writes issued; ``rd_we = 1``, ``rd_data`` =
        max |written|; ``rc_we = 0``.
    busy : ``Out(1)``
        From the cycle after ``cmd`` is accepted up to and including the ``done`` cycle.
    """

    def __init__(self, rows: int = 8, acc_width: int = 21, vmem_depth: int = 4096, lanes: int = 2):
        _check_pos_int("rows", rows)
        _check_pos_int("acc_width", acc_width)
        _check_pos_int("vmem_depth", vmem_depth)
        if lanes not in (1, 2, 4):
            raise ValueError(f"lanes must be 1, 2 or 4, not {lanes!r}")
        self._rows, self._acc_width, self._vmem_depth, self._lanes = rows, acc_width, vmem_depth, lanes
        self._vaw = max(1, (vmem_depth - 1).bit_length())
        ports = {}
        for k in range(lanes):
            sfx = "" if k == 0 else str(k + 1)
            ports[f"vmem_rd{sfx}"] = Out(MemReadSignature(self._vaw, signed(VMEM_BITS)))
            ports[f"vmem_wr{sfx}"] = Out(MemWriteSignature(self._vaw, signed(VMEM_BITS)))
        super().__init__({
            "cmd": In(stream.Signature(UNIT_CMD_LAYOUT)),
            "i": In(stream.Signature(data.ArrayLayout(signed(acc_width), rows))),
            **ports,
            "result": Out(UnitResultSignature()),
            "busy": Out(1),
        })

    rows = property(lambda self: self._rows, doc="Outputs per engine beat.")
    acc_width = property(lambda self: self._acc_width, doc="Accumulator width (bits, signed).")
    vmem_depth = property(lambda self: self._vmem_depth, doc="VMEM words.")
    addr_width = property(lambda self: self._vaw, doc="VMEM address width.")
    lanes = property(lambda self: self._lanes, doc="Outputs per cycle.")
    rd_ports = property(lambda self: [getattr(self, f"vmem_rd{'' if k == 0 else k + 1}") for k in range(self._lanes)],
                        doc="The VMEM read ports, lane by lane.")
    wr_ports = property(lambda self: [getattr(self, f"vmem_wr{'' if k == 0 else k + 1}") for k in range(self._lanes)],
                        doc="The VMEM write ports, lane by lane.")

    def cycles(self, groups: int) -> int:
        """Accept to ``done`` of a command of ``groups`` full beats offered without gaps."""
        return groups * -(-self._rows // self._lanes) + 10 + (self._lanes > 2)
    product_width = property(lambda self: self._acc_width + 18, doc="Width of acc * scale (P).")

    def elaborate(self, platform):
        m = Module()
        rows, AW, Y, VB = self._rows, self._acc_width, Y_BITS, VMEM_BITS
        P = AW + 18                 # acc * scale, exact
        TW = P + Y + 1              # shifter width: p << (Y + 1), shifted right by shift + Y
        SMIN, SMAX = -Y, P + 1      # clamped shift range

        # ------------------------------------------------------------ command latch
        # Datapath registers have no reset (reset_less): they are rewritten before they are read
        # (command fields on accept, pipeline stages every cycle, read only where their valid bit
        # is set), and a reset on them would route the synchronous reset to every slice.
        busy = Signal()
        f_sat = Signal(6, reset_less=True)
        f_raw = Signal(reset_less=True)
        f_res = Signal(reset_less=True)
        f_ra = Signal(signed(REG_BITS), reset_less=True)
        f_rb = Signal(signed(REG_BITS), reset_less=True)
        cmd = self.cmd.payload
        accept = self.cmd.valid & self.cmd.ready
        m.d.comb += [self.cmd.ready.eq(~busy), self.busy.eq(busy)]

        L = self._lanes
        beats_left = Signal(20)
        beats_nz = Signal()         # beats_left != 0
        full = Signal()             # the beat buffer holds outputs to issue
        r = Signal(range(rows + 1)) # index of the next output in the buffered beat
        # Flags kept with the counters (registered, so the engine's handshake sees no adder):
        # rem_gt[k]: more than k outputs of the beat left (rows - r > k), k = 1 .. L;
        # left_gt[k]: more than k outputs of the command left (left > k), k = 0 .. L.
        rem_gt = [None] + [Signal(name=f"rem_gt{k}") for k in range(1, L + 1)]
        left_gt = [Signal(name=f"left_gt{k}") for k in range(L + 1)]
        left = Signal(17)           # outputs of the command not issued yet
        addr = Signal(self._vaw, reset_less=True)    # a0 + index of the next output
        buf = Signal(data.ArrayLayout(signed(AW), rows), reset_less=True)
        maxw = Signal(VB)           # running max |written|

        # ------------------------------------------------------------ decoded constants
        # cycle c + 1 (c: accept): scale, clamped shift, saturation width
        scale = Signal(signed(18), reset_less=True)
        sh = Signal(range(SMIN, SMAX + 1), reset_less=True)
        wsat = Signal(range(Y + 1), reset_less=True)          # clip width: sat, or Y when sat = 0
        m.d.sync += [
            scale.eq(Mux(f_raw, 1, f_ra[:18].as_signed())),
            sh.eq(Mux(f_raw, 0, Mux(f_rb < SMIN, SMIN, Mux(f_rb > SMAX, SMAX, f_rb)))),
            wsat.eq(Mux(f_sat == 0, Y, f_sat)),
        ]
        # cycle c + 2: shifter amount, sticky mask, clip masks and limits
        sv = Signal(range(TW + 1), reset_less=True)           # right shift of p << (Y + 1): shift + Y
        smask = Signal(TW, reset_less=True)                   # bits of p << (Y + 1) below position sv
        hmask = Signal(P + Y, reset_less=True)                # bits >= wsat - 1: must equal the sign to fit
        hmask_z = Signal(VB + 3, reset_less=True)             # the same for the residual sum, against sat
        zsat = Signal(range(VB + 1), reset_less=True)
        m.d.sync += [
            sv.eq(sh + Y),
            smask.eq(Cat(*[sv > k for k in range(TW)])),
            hmask.eq(Cat(*[wsat <= k + 1 for k in range(P + Y)])),
            hmask_z.eq(Cat(*[wsat <= k + 1 for k in range(VB + 3)])),
            zsat.eq(f_sat),
        ]
        lim_hi = Signal(signed(Y))           # 2**(wsat - 1) - 1: the bits below wsat - 1
        lim_lo = Signal(signed(Y))           # -2**(wsat - 1): the bits from wsat - 1 up
        m.d.comb += [lim_hi.eq(~hmask[:Y]), lim_lo.eq(hmask[:Y])]

        # ------------------------------------------------------------ input and issue
        # L outputs per cycle (lane k: output r + k of the beat, VMEM word a + k; the words of a
        # cycle are consecutive, so in different VMEM banks); lane k idles when fewer than k + 1
        # outputs of the beat or of the command are left. Everything the engine's output
        # handshake sees (``i.ready``) comes straight from registers: the flags beside ``r`` and
        # ``left`` are kept with the counters, so no adder or wide compare lies between them and
        # the FIFO.
        on = [Signal(name=f"lane{k}") for k in range(L)]       # lane k issues this cycle
        issue = on[0]
        last_issue = Signal()
        take = Signal()
        m.d.comb += on[0].eq(full)
        for k in range(1, L):
            m.d.comb += on[k].eq(full & rem_gt[k] & left_gt[k])
        m.d.comb += [
            last_issue.eq(full & ~(rem_gt[L] & left_gt[L])),
            self.i.ready.eq(busy & beats_nz & (~full | last_issue)),
            take.eq(self.i.valid & self.i.ready),
        ]
        step = Signal(range(L + 1))
        m.d.comb += step.eq(sum(on))
        after = Signal()            # outputs of the command remain after this cycle's issue
        m.d.comb += after.eq(left_gt[1])
        for k in range(1, L):
            with m.If(on[k]):
                m.d.comb += after.eq(left_gt[k + 1])
        left_n = Signal(17)
        r_n = Signal(range(rows + L + 1))
        m.d.comb += [left_n.eq(left - step), r_n.eq(r + step)]
        shifted = Signal.like(buf.as_value())
        with m.Switch(step):
            for k in range(1, L + 1):
                with m.Case(k):
                    m.d.comb += shifted.eq(buf.as_value() >> (k * AW))
        with m.If(issue):
            m.d.sync += [left.eq(left_n), addr.eq(addr + step), r.eq(r_n), buf.as_value().eq(shifted)]
            m.d.sync += [g.eq(left_n > k) for k, g in enumerate(left_gt)]
            m.d.sync += [rem_gt[k].eq(r_n < rows - k) for k in range(1, L + 1)]
        with m.If(take):
            m.d.sync += [beats_left.eq(beats_left - 1), beats_nz.eq(beats_left != 1),
                         buf.eq(self.i.payload), r.eq(0),
                         full.eq(Mux(issue, after, left_gt[0]))]
            m.d.sync += [rem_gt[k].eq(rows > k) for k in range(1, L + 1)]
        with m.Elif(last_issue):
            m.d.sync += full.eq(0)

        # ------------------------------------------------------------ pipeline (L lanes)
        NV = 9 + (L > 2)                                                       # stages tracked
        v = [[Signal(name=f"v{k}_{j}") for k in range(NV)] for j in range(L)]  # stage k of lane j
        m.d.sync += [v[j][1].eq(on[j]) for j in range(L)]
        for j in range(L):
            for k in range(2, NV):
                m.d.sync += v[j][k].eq(v[j][k - 1])
        # each lane's address chain, from its own register (no adder behind the chain)
        al = [[Signal(self._vaw, name=f"addr{k}_{j}", reset_less=True) for k in range(8)] for j in range(L)]
        for j in range(L):
            m.d.sync += al[j][1].eq(addr + j)
            for k in range(2, 8):
                m.d.sync += al[j][k].eq(al[j][k - 1])

        assert 5 - READ_LATENCY >= 1
        rports, wports = self.rd_ports, self.wr_ports
        absw = []
        for j in range(L):
            aj = al[j]
            acc1 = Signal(signed(AW), name=f"acc1_{j}", reset_less=True)
            m.d.sync += acc1.eq(buf[j] if j < rows else 0)
            # S1: multiply
            p2 = Signal(signed(P), name=f"p2_{j}", reset_less=True)
            m.d.sync += p2.eq(acc1 * scale)
            # S2: one variable arithmetic shifter, sticky bit
            x2 = Signal(signed(TW), name=f"x2_{j}")
            m.d.comb += x2.eq(p2 << (Y + 1))
            t3 = Signal(signed(TW), name=f"t3_{j}", reset_less=True)
            c3 = Signal(name=f"c3_{j}", reset_less=True)
            m.d.sync += [t3.eq(x2 >> sv),
                         c3.eq(~p2[-1] | (x2.as_unsigned() & smask).any())]
            # S3: rounding increment, halve
            y4 = Signal(signed(P + Y), name=f"y4_{j}", reset_less=True)
            m.d.sync += y4.eq((t3 + c3) >> 1)
            # S4: clip to wsat bits (sat, or Y); the residual read went out earlier
            ys5 = Signal(signed(Y), name=f"ys5_{j}", reset_less=True)
            m.d.sync += ys5.eq(Mux(_fits_mask(y4, hmask), y4[:Y].as_signed(), Mux(y4[-1], lim_lo, lim_hi)))
            rp = rports[j]
            m.d.comb += [rp.addr.eq(aj[5 - READ_LATENCY]), rp.en.eq(v[j][5 - READ_LATENCY] & f_res)]
            # S5: residual add
            z6 = Signal(signed(VB + 3), name=f"z6_{j}", reset_less=True)
            m.d.sync += z6.eq(Mux(f_res, rp.data + ys5, ys5))
            # S6: clip to sat, register the write
            wdata = Signal(signed(VB), name=f"wdata_{j}", reset_less=True)
            wen = Signal(name=f"wen_{j}")
            waddr = Signal(self._vaw, name=f"waddr_{j}", reset_less=True)
            zc = Signal(signed(VB + 3), name=f"zc_{j}")
            m.d.comb += zc.eq(Mux((zsat == 0) | _fits_mask(z6, hmask_z), z6, Mux(z6[-1], lim_lo, lim_hi)))
            m.d.sync += [wdata.eq(zc[:VB].as_signed()), wen.eq(v[j][6]), waddr.eq(aj[6])]
            wp = wports[j]
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(wdata), wp.en.eq(wen)]
            # S7: |written| (0 for an idle lane)
            abs8 = Signal(VB, name=f"abs8_{j}")
            m.d.sync += abs8.eq(Mux(wen, Mux(wdata < 0, -wdata, wdata), 0))
            absw.append(abs8)

        def vmax(x, y):
            return Mux(y > x, y, x)
        if L > 2:           # S8: the larger of each pair of lanes, registered (S9: as S8 below)
            pairs = [Signal(VB, name=f"pmax{i}") for i in range(L // 2)]
            m.d.sync += [pr.eq(vmax(absw[2 * i], absw[2 * i + 1])) for i, pr in enumerate(pairs)]
            absw = pairs
        # S8: running maximum
        big = Signal(VB)
        m.d.comb += big.eq(absw[0] if len(absw) == 1 else vmax(absw[0], absw[1]))
        with m.If(big > maxw):
            m.d.sync += maxw.eq(big)

        # ------------------------------------------------------------ control
        drained = Signal()
        m.d.comb += drained.eq(~full & ~beats_nz & ~Cat(*v[0][1:]).any())
        done = Signal()
        m.d.comb += done.eq(busy & drained)
        m.d.comb += [self.result.done.eq(done), self.result.rd_we.eq(done),
                     self.result.rd_data.eq(maxw), self.result.rc_we.eq(0), self.result.rc_data.eq(0)]
        with m.If(accept):
            ins = cmd.instr
            imm = _field(ins, "imm")
            m.d.sync += [
                busy.eq(1),
                f_sat.eq(_field(ins, "sat")),
                f_raw.eq(imm[_IMM_RAW]), f_res.eq(imm[_IMM_RESIDUAL]),
                f_ra.eq(cmd.ra), f_rb.eq(cmd.rb),
                beats_left.eq(_field(ins, "a2")), beats_nz.eq(_field(ins, "a2") != 0), full.eq(0), r.eq(0),
                left.eq(_field(ins, "n")), addr.eq(_field(ins, "a0")), maxw.eq(0),
            ]
            m.d.sync += [g.eq(_field(ins, "n") > k) for k, g in enumerate(left_gt)]
            m.d.sync += [rem_gt[k].eq(rows > k) for k in range(1, L + 1)]
        with m.Elif(done):
            m.d.sync += busy.eq(0)
        return m
