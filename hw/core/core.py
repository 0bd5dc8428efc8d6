"""The accelerator core: memories, sequencer, GEMV engine, vector and scalar units, link bridge.

:class:`AcceleratorCore` runs the programs of ``sw/program.py`` (instruction set: ``docs/isa.md``)
token after token and answers the link's LOAD / RUN / RESET commands and memory accesses
(``sw.protocol``: :class:`~sw.protocol.CoreMemory`, :class:`~sw.protocol.CoreInfo`,
:class:`~sw.protocol.RunStatus`, :func:`~sw.protocol.run_arg`). Its structure (``docs/core.md``):

* **Memories**: PMEM (program, 128-bit words), VMEM (36-bit vector words), CMEM (18-bit
  constants), SIGMEM (sigmoid table), TOKMEM (16-bit tokens); TMEM lives in the scalar unit, WMEM
  and the two activation banks in the GEMV engine. Each is byte-addressed from the link with a
  power-of-two stride per word; while the core runs, the link reaches only INFO, CTRL and TOKMEM
  reads (the other requests wait for the run to end).
* **Sequencer**: fetches one instruction from PMEM, reads its scalar sources from the register
  file, hands it to the unit that executes it and, for scalar and vector instructions, waits for
  that unit to finish before it fetches the next. A GEMV runs in the background (engine and
  writeback) while scalar instructions and the vector instructions that only read VMEM (``VNQA``,
  ``VUMAX2``, ``VMAXABS``, ``VARGMAX``, and ``VQ`` into the other activation bank) go on, unless
  the GEMV is a residual one (its writeback reads VMEM); ``SYNC 0`` and ``HALT`` wait for it, a
  second GEMV waits for the first, and its ``max|written|`` goes into ``R[rd]`` when it finishes.
  A vector instruction that writes no register (``VQ``, ``VSET``) also runs in the background:
  scalar instructions go on beside it; ``SLDC``, ``GEMV``, the next vector instruction and
  ``HALT`` wait for it.
  The compiled programs access a GEMV's outputs and its register only after a ``SYNC`` (``sw.isa_sim``
  rejects any other program), so this order gives the executor's results. The cycle model of
  ``sw.isa_sim`` projects a wider, more overlapped design; this sequencer's cycles are measured
  (``bench/core_gateware.py``).
* **Units**: :class:`~hw.core.scalar_unit.ScalarUnit` (scalar instructions), ``SLDC`` in the
  sequencer (a CMEM read), :class:`~hw.core.vector_unit.VectorUnit` (vector instructions),
  :class:`~hw.gemv.GemvEngine` feeding :class:`~hw.core.gemv_writeback.GemvWriteback` (GEMV).

A step: read ``TOKMEM[t]``, clear the 32 registers and write the token into ``r1``, run the token
program from its LOAD address to ``HALT``, read the next token from ``r2`` and store it into
``TOKMEM[t + 1]`` when ``t + 1 >= fill``. A RESET stops a run at the next instruction boundary and
runs the reset program (zeroing the recurrent state); a program that runs off the end of PMEM
ends the run with ``RunError.NO_HALT``. Every wait is bounded by the instruction being executed,
so the core always answers.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from sw import protocol as P
from sw.isa import CMEM_BITS, INSTR_BITS, REG_NEXT, REG_TOKEN, SCALAR_OPS, TMEM_BITS, VECTOR_OPS, VMEM_BITS, Op

from ..gemv import GemvEngine
from ..link.protocol import CorePortSignature, MemPortSignature
from ..pe.adder_tree import acc_width
from .gemv_writeback import GemvWriteback
from .ports import READ_LATENCY, BankedMemory, exclusive
from .scalar_unit import ScalarUnit
from .vector_unit import CMEM_BANKS, CMEM_PORT_REACH, VectorUnit

__all__ = ["AcceleratorCore"]

#: Banks (by address modulo the count) of the core's banked memories (``hw.core.ports.BankedMemory``):
#: VMEM has four and CMEM eight, so that the vector unit reads four words of VMEM and four of each
#: of two constant streams per cycle (its wide paths); SIGMEM is two banks, and two copies of it
#: (a sigmoid unit each).
BANKS = {"vmem": 4, "cmem": CMEM_BANKS, "sigmem": 2}

_FORMAT_IDS = {"2bit": P.WeightFormat.TWO_BIT, "trits5": P.WeightFormat.TRITS5}


def _bits(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


class AcceleratorCore(wiring.Component):
    """The core behind the link (see the module docstring).

    Parameters
    ----------
    lanes, rows, weight_format :
        The GEMV engine (``hw.gemv.GemvEngine``).
    wmem_depth, k_max, vmem_depth, cmem_depth, tmem_depth, sig_depth, pmem_depth, tokmem_depth : int
        Words of each memory (``k_max``: the longest GEMV input, one activation bank).

    Members
    -------
    mem : ``In(MemPortSignature(32))``
        The link's memory port (memory id = :class:`sw.protocol.CoreMemory`).
    port : ``In(CorePortSignature())``
        The link's command port (LOAD, RUN, RESET).
    busy : ``Out(1)``
        A run or a reset program is in progress.
    """

    def __init__(self, *, lanes: int = 32, rows: int = 8, weight_format: str = "trits5",
                 wmem_depth: int = 4096, k_max: int = 512, vmem_depth: int = 4096, cmem_depth: int = 65536,
                 tmem_depth: int = 1024, sig_depth: int = 2048, pmem_depth: int = 512, tokmem_depth: int = 1024):
        depths = dict(wmem_depth=wmem_depth, vmem_depth=vmem_depth, cmem_depth=cmem_depth, tmem_depth=tmem_depth,
                      sig_depth=sig_depth, pmem_depth=pmem_depth, tokmem_depth=tokmem_depth)
        for name, v in depths.items():
            if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 1 << 20:
                raise ValueError(f"{name} must be an integer in 2..2**20, not {v!r}")
        if weight_format not in _FORMAT_IDS:
            raise ValueError(f"weight_format must be one of {sorted(_FORMAT_IDS)}, not {weight_format!r}")
        if not isinstance(tokmem_depth, int) or tokmem_depth > 1 << 16:
            raise ValueError("tokmem_depth must be at most 65536")
        self._engine = GemvEngine(lanes=lanes, rows=rows, weight_depth=wmem_depth, k_max=k_max,
                                  weight_format=weight_format)
        self._engine._MustUse__silence = True
        self._p = dict(lanes=lanes, rows=rows, weight_format=weight_format, k_max=k_max, **depths)
        self._info = P.CoreInfo(
            magic=P.CORE_INFO_MAGIC, isa_version=P.ISA_VERSION, pe_kind=int(P.PEKind.ADDER_TREE),
            weight_format=int(_FORMAT_IDS[weight_format]), lanes=lanes, rows=rows,
            word_bits=self._engine.word_bits, k_max=k_max, vector_width=1, pmem_words=pmem_depth,
            wmem_words=wmem_depth, cmem_words=cmem_depth, tmem_words=tmem_depth, sigmem_words=sig_depth,
            vmem_words=vmem_depth, tokmem_words=tokmem_depth)
        super().__init__({"mem": In(MemPortSignature(32)), "port": In(CorePortSignature()), "busy": Out(1)})

    @staticmethod
    def writeback_lanes(rows: int) -> int:
        """Lanes of the GEMV writeback for an engine of ``rows`` rows: one per four rows, at most one
        per VMEM bank, so a beat of ``rows`` outputs takes 4 cycles (16 rows: 4 lanes, 8 rows: 2)
        and the writeback keeps up with every GEMV of at least 4 chunks."""
        return max(1, min(BANKS["vmem"], rows // 4))

    @staticmethod
    def shape_for(rows: int | None) -> dict:
        """Constructor arguments of the core with an engine of ``rows`` rows and the default's weight
        block RAM (``build.py --engine-rows``); ``None``: the default core (no arguments)."""
        return {} if rows is None else {"rows": rows, "wmem_depth": AcceleratorCore.weight_depth_for(rows)}

    @staticmethod
    def weight_depth_for(rows: int) -> int:
        """The weight memory's depth for an engine of ``rows`` rows in the same block RAM as the
        default (32 lanes x 8 rows x 4096 words of trits5)."""
        return 32768 // rows

    @property
    def info(self) -> P.CoreInfo:
        """The INFO record (memory sizes in words, engine shape)."""
        return self._info

    @property
    def mem_sizes(self) -> tuple:
        """Bytes of each memory on the link, by memory id (the manifest's ``mem_sizes``)."""
        return self._info.mem_bytes()

    @property
    def lanes(self) -> int:
        return self._p["lanes"]

    @property
    def block_memories(self) -> list[tuple[str, int, int]]:
        """``(name, depth, width)`` of every memory of the core meant for block RAM (the banks of
        VMEM, CMEM and the two copies of SIGMEM, the columns of the engine's weight memory, its
        activation memory, PMEM, TOKMEM, TMEM); the register file and the FIFOs are left out."""
        p = self._p
        mems = [(f"wmem{i}", p["wmem_depth"], w) for i, w in enumerate(self._engine.weight_columns)]
        mems += [("amem", 2 * (p["k_max"] // p["lanes"]), 8 * p["lanes"]),
                 ("pmem", p["pmem_depth"], INSTR_BITS), ("tokmem", p["tokmem_depth"], 16),
                 ("tmem", p["tmem_depth"], TMEM_BITS)]
        for name, depth, width in (("vmem", p["vmem_depth"], VMEM_BITS), ("cmem", p["cmem_depth"], CMEM_BITS),
                                   ("sigmem", p["sig_depth"], TMEM_BITS)):
            nb = BANKS[name]
            for copy in ((name, "sigmemb") if name == "sigmem" else (name,)):
                mems += [(f"{copy}{b}", max(1, (depth + nb - 1 - b) // nb), width) for b in range(nb)]
        return mems

    def elaborate(self, platform):  # noqa: C901 (the sequencer is one state machine)
        m = Module()
        p = self._p
        info = self._info
        lanes, rows, k_max = p["lanes"], p["rows"], p["k_max"]
        chunks_max = k_max // lanes

        m.submodules.engine = eng = self._engine
        m.submodules.su = su = ScalarUnit(table_depth=p["tmem_depth"], read_ports=3)
        m.submodules.vu = vu = VectorUnit(vmem_depth=p["vmem_depth"], cmem_depth=p["cmem_depth"],
                                          sig_depth=p["sig_depth"], lanes=lanes, chunks_max=chunks_max)
        m.submodules.wb = wb = GemvWriteback(rows=rows, acc_width=acc_width(k_max), vmem_depth=p["vmem_depth"],
                                             lanes=self.writeback_lanes(rows))
        wiring.connect(m, eng.o, wb.i)
        m.d.comb += [eng.a_wr.addr.eq(vu.a_wr.addr), eng.a_wr.data.eq(vu.a_wr.data), eng.a_wr.en.eq(vu.a_wr.en)]

        # ------------------------------------------------------------------ memories
        m.submodules.pmem = pmem = memory.Memory(shape=unsigned(INSTR_BITS), depth=p["pmem_depth"], init=[])
        m.submodules.tokmem = tokmem = memory.Memory(shape=unsigned(16), depth=p["tokmem_depth"], init=[])
        pm_r, pm_w = pmem.read_port(), pmem.write_port()
        # VMEM, CMEM, SIGMEM: registered read ports (READ_LATENCY) and registered write ports, so
        # the block-RAM output multiplexers and the requesters' address logic get cycles of their own
        vmem = BankedMemory(m, "vmem", signed(VMEM_BITS), p["vmem_depth"], BANKS["vmem"])
        # CMEM: eight banks by address modulo 8 (hw.core.ports.BankedMemory), so the vector unit reads
        # four words of each of two constant streams per cycle (VNQA, VUMAX2, VQ four-lane paths)
        cmem = BankedMemory(m, "cmem", signed(CMEM_BITS), p["cmem_depth"], BANKS["cmem"])
        cm0_data = Signal(signed(CMEM_BITS))     # CMEM's shared requester (SLDC, the link): its word
        sigmem = BankedMemory(m, "sigmem", unsigned(TMEM_BITS), p["sig_depth"], BANKS["sigmem"])
        sigmem_b = BankedMemory(m, "sigmemb", unsigned(TMEM_BITS), p["sig_depth"], BANKS["sigmem"])
        tk_r, tk_lr, tk_w = tokmem.read_port(), tokmem.read_port(), tokmem.write_port()

        # ------------------------------------------------------------------ sequencer state
        ir = Signal(INSTR_BITS, reset_less=True)     # (read only in the states that loaded it)
        op, sat, rd, ra, rb, rc = ir[0:6], ir[6:12], ir[12:17], ir[17:22], ir[22:27], ir[27:32]
        a1, a2 = ir[68:88], ir[88:108]
        imm = ir[108:128].as_signed()
        pc = Signal(range(p["pmem_depth"]))
        prog_addr = Signal(16)
        reset_addr = Signal(16)
        loaded = Signal()
        active = Signal()                        # not idle: a run or the reset program
        resetting = Signal()                     # running the reset program
        reset_reply = Signal()                   # answer the RESET command when it ends
        abort = Signal()
        run_error = Signal(8)
        step_t = Signal(16)
        steps = Signal(16)
        fill = Signal(16)
        steps_done = Signal(32)
        tokens = Signal(32)
        last_token = Signal(16)
        step_cycles = Signal(32)
        step_engine = Signal(32)
        run_cycles = Signal(32)
        cur_cycles = Signal(32)
        cur_engine = Signal(32)
        core_cycles = Signal(32)
        clr = Signal()
        token_in = Signal(16)
        v_res = Signal.like(vu.result.rd_data, reset_less=True)
        v_res2 = Signal.like(vu.result.rc_data, reset_less=True)
        v_we = Signal()
        v_we2 = Signal()

        # Operand stage: the register file's asynchronous reads of ra, rb, rc (rc: the instruction
        # register's fields) are registered in A, B, C every cycle, and an instruction that uses
        # them (HALT, SLDC, GEMV, vector instructions) is issued in its second cycle in ISSUE
        # (`opnd`), so no unit's logic shares a cycle with the register file's read. No bypass is
        # needed: the registers an instruction reads are written before it reaches ISSUE (the
        # sequencer waits for every scalar, vector and SLDC result), except a GEMV's max, which the
        # programs read only after a SYNC that waits for it (``sw.isa_sim`` rejects others).
        A, B, C = (Signal(signed(54), name=n, reset_less=True) for n in ("opnd_a", "opnd_b", "opnd_c"))
        m.d.sync += [A.eq(su.read[0].data), B.eq(su.read[1].data), C.eq(su.read[2].data)]
        opnd = Signal()          # A, B, C hold the sources of the instruction in ISSUE
        needs_opnd = Signal()
        m.d.comb += needs_opnd.eq(op.matches(Op.HALT, Op.SLDC, Op.GEMV, *VECTOR_OPS))
        # Read port 0 addresses r2 (the next token) for a HALT: decoded from the instruction
        # register alone, so the register file's address never waits for run-state logic.
        read_next = Signal()
        m.d.comb += read_next.eq(op == Op.HALT)
        m.d.comb += [su.read[0].addr.eq(Mux(read_next, REG_NEXT, ra)), su.read[1].addr.eq(rb),
                     su.read[2].addr.eq(rc)]

        m.d.comb += [self.busy.eq(active), self.port.busy.eq(active), self.port.cycles.eq(core_cycles)]
        with m.If(active):
            m.d.sync += [core_cycles.eq(core_cycles + 1), run_cycles.eq(run_cycles + 1),
                         cur_cycles.eq(cur_cycles + 1), cur_engine.eq(cur_engine + eng.busy)]

        # ------------------------------------------------------------------ link commands
        # the command port registered (start is a one-cycle pulse; the reply is registered too)
        c_start, c_op, c_arg = Signal(), Signal.like(self.port.op), Signal.like(self.port.arg)
        m.d.sync += [c_start.eq(self.port.start), c_op.eq(self.port.op), c_arg.eq(self.port.arg)]
        arg = c_arg
        m.d.sync += self.port.done.eq(0)

        def reply(code):
            m.d.sync += [self.port.done.eq(1), self.port.result.eq(int(code))]

        start_run = Signal()
        start_reset = Signal()
        with m.If(c_start):
            with m.Switch(c_op):
                with m.Case(P.Command.LOAD):
                    with m.If(active):
                        reply(P.ErrorCode.BUSY)
                    with m.Elif((arg[0:16] >= p["pmem_depth"]) | (arg[16:32] >= p["pmem_depth"])):
                        reply(P.ErrorCode.BAD_ARGUMENT)
                    with m.Else():
                        m.d.sync += [prog_addr.eq(arg[0:16]), reset_addr.eq(arg[16:32]), loaded.eq(1)]
                        reply(0)
                with m.Case(P.Command.RUN):
                    with m.If(active):
                        reply(P.ErrorCode.BUSY)
                    with m.Elif(~loaded):
                        reply(P.ErrorCode.NOT_LOADED)
                    with m.Elif((arg[0:16] == 0) | (arg[16:32] == 0) | (arg[0:16] >= p["tokmem_depth"])):
                        reply(P.ErrorCode.BAD_ARGUMENT)
                    with m.Else():
                        m.d.comb += start_run.eq(1)
                        m.d.sync += [steps.eq(arg[0:16]), fill.eq(arg[16:32]), step_t.eq(0), steps_done.eq(0),
                                     run_cycles.eq(0), run_error.eq(P.RunError.NONE)]
                        reply(0)
                with m.Case(P.Command.RESET):
                    m.d.sync += [tokens.eq(0), core_cycles.eq(0)]
                    with m.If(active):
                        m.d.sync += [abort.eq(1), reset_reply.eq(1)]
                    with m.Elif(loaded):
                        m.d.comb += start_reset.eq(1)
                        m.d.sync += reset_reply.eq(1)
                    with m.Else():
                        reply(0)
                with m.Default():
                    reply(P.ErrorCode.UNSUPPORTED)

        # ------------------------------------------------------------------ sequencer
        # SLDC: the address R[ra] + imm is registered in ISSUE and the CMEM read goes out in the
        # next cycle (the register file's read and the adder do not share a cycle with the
        # memory's request multiplexer); the word arrives READ_LATENCY cycles after the request.
        cm_seq_addr = Signal(_bits(p["cmem_depth"]))
        cm_seq_en = Signal()
        sldc_wait = Signal(range(READ_LATENCY + 1))
        m.d.sync += [cm_seq_en.eq(0),            # one request, in the cycle after ISSUE
                     opnd.eq(0)]                 # (ISSUE sets it while an instruction stays)
        tk_seq_wen = Signal()
        tk_seq_waddr = Signal.like(tk_w.addr)
        tk_seq_wdata = Signal(16)
        su_w = wiring.Signature({"en": Out(1), "addr": Out(5), "data": Out(signed(54))}).create(path=("seq_w",))

        # A GEMV runs in the background (engine + writeback) while the sequencer goes on with
        # scalar instructions and with vector instructions that only read VMEM (the writeback
        # owns the VMEM write port, and its read port in residual mode). Its max|written| is
        # written into R[rd] in the first cycle the sequencer does not write a register.
        g_busy = Signal()
        g_rd = Signal(5)
        g_bank = Signal()
        g_residual = Signal()
        g_max = Signal.like(wb.result.rd_data, reset_less=True)
        g_max_pending = Signal()
        gemv_idle = ~g_busy & ~g_max_pending
        with m.If(wb.result.done):
            m.d.sync += [g_busy.eq(0), g_max.eq(wb.result.rd_data), g_max_pending.eq(g_rd != 0)]
        with m.If(su_w.en):
            m.d.comb += [su.write.en.eq(1), su.write.addr.eq(su_w.addr), su.write.data.eq(su_w.data)]
        with m.Elif(g_max_pending):
            m.d.comb += [su.write.en.eq(1), su.write.addr.eq(g_rd), su.write.data.eq(g_max)]
            m.d.sync += g_max_pending.eq(0)
        # A vector instruction that writes no register (VQ, VSET, or any with rd = 0 and no rc
        # result) runs in the background too: the sequencer goes on with scalar instructions
        # (which touch neither the unit's memories nor its registers) while it runs; SLDC, GEMV,
        # the next vector instruction, HALT and the end of a run wait for the vector unit.
        vec_writes = Signal()
        m.d.comb += vec_writes.eq((op.matches(Op.VEMB, Op.VADD, Op.VMAXABS, Op.VNQA, Op.VUMAX2, Op.VREC, Op.VGLU,
                                              Op.VARGMAX) & (rd != 0))
                                  | (op.matches(Op.VNQA, Op.VUMAX2) & (rc != 0)))
        vu_idle = ~vu.busy
        reads_only = ((op == Op.VNQA) | (op == Op.VUMAX2) | (op == Op.VMAXABS) | (op == Op.VARGMAX)
                      | ((op == Op.VQ) & (ir[48:68] != g_bank)))
        vector_ok = ~g_busy | (~g_residual & reads_only)

        # Prefetch: while an instruction waits in ISSUE or for its unit, PMEM is read at pc + 1;
        # when it is done, the next instruction goes straight to ISSUE (no FETCH/DECODE cycles).
        pf_drive = Signal()                  # this cycle reads PMEM[pc + 1]
        pf_ok = Signal()                     # ... and the last cycle did, with the same pc
        advance = Signal()
        m.d.sync += pf_ok.eq(pf_drive & ~advance)
        with m.If(pf_drive):
            m.d.comb += [pm_r.addr.eq(pc + 1), pm_r.en.eq(1)]

        def next_instr():
            m.d.comb += advance.eq(1)
            with m.If(pc == p["pmem_depth"] - 1):
                m.d.sync += run_error.eq(P.RunError.NO_HALT)
                m.next = "END"
            with m.Elif(pf_ok):
                m.d.sync += [pc.eq(pc + 1), ir.eq(pm_r.data)]
                m.next = "ISSUE"
            with m.Else():
                m.d.sync += pc.eq(pc + 1)
                m.next = "FETCH"

        def begin_reset():
            m.d.sync += [pc.eq(reset_addr), resetting.eq(1), abort.eq(0)]
            m.next = "FETCH"

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(start_run):
                    m.d.sync += active.eq(1)
                    m.next = "STEP"
                with m.Elif(start_reset):
                    m.d.sync += active.eq(1)
                    begin_reset()
            with m.State("STEP"):
                m.d.comb += [tk_r.addr.eq(step_t), tk_r.en.eq(1)]
                m.d.sync += [clr.eq(0), cur_cycles.eq(1), cur_engine.eq(0)]
                m.next = "CLEAR"
            with m.State("CLEAR"):         # the token is latched, then every register cleared but r1
                m.d.sync += clr.eq(1)
                with m.If(clr == 0):
                    m.d.sync += token_in.eq(tk_r.data)
                with m.Else():
                    m.d.comb += [su.clear.eq(1), su_w.en.eq(1), su_w.addr.eq(REG_TOKEN), su_w.data.eq(token_in)]
                    m.d.sync += pc.eq(prog_addr)
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [pm_r.addr.eq(pc), pm_r.en.eq(1)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += ir.eq(pm_r.data)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += pf_drive.eq(1)
                m.d.sync += opnd.eq(~advance)
                with m.If(abort & ~resetting):
                    m.d.sync += run_error.eq(P.RunError.ABORTED)
                    begin_reset()
                with m.Elif(needs_opnd & ~opnd):
                    pass                      # the operand registers load in this cycle
                with m.Elif(op == Op.HALT):
                    with m.If(~gemv_idle | ~vu_idle):
                        pass                  # every GEMV's and vector instruction's results are written first
                    with m.Elif(resetting):
                        m.next = "END"
                    with m.Else():
                        m.d.sync += last_token.eq(A[:16])
                        m.next = "STEP_END"
                with m.Elif(op == Op.SLDC):
                    with m.If(vu_idle):       # (its CMEM read would compete with the unit's)
                        m.d.sync += [cm_seq_addr.eq(A + imm), cm_seq_en.eq(1), sldc_wait.eq(READ_LATENCY)]
                        m.next = "SLDC"
                with m.Elif(op == Op.GEMV):
                    m.d.comb += [eng.cmd.payload.base.eq(a1), eng.cmd.payload.groups.eq(a2),
                                 eng.cmd.payload.chunks.eq(imm[0:15]), eng.cmd.payload.bank.eq(imm[15]),
                                 wb.cmd.payload.instr.eq(ir), wb.cmd.payload.ra.eq(A), wb.cmd.payload.rb.eq(B),
                                 wb.cmd.payload.rc.eq(C)]
                    with m.If(gemv_idle & vu_idle & eng.cmd.ready & wb.cmd.ready):
                        m.d.comb += [eng.cmd.valid.eq(1), wb.cmd.valid.eq(1)]
                        m.d.sync += [g_busy.eq(1), g_rd.eq(rd), g_bank.eq(imm[15]), g_residual.eq(imm[17])]
                        next_instr()
                with m.Elif(op == Op.SYNC):   # at most one GEMV is outstanding: SYNC k > 0 waits for nothing
                    with m.If((imm != 0) | gemv_idle):
                        next_instr()
                with m.Elif((op >= min(VECTOR_OPS)) & (op <= max(VECTOR_OPS))):
                    m.d.comb += [vu.cmd.valid.eq(vector_ok), vu.cmd.payload.instr.eq(ir), vu.cmd.payload.ra.eq(A),
                                 vu.cmd.payload.rb.eq(B), vu.cmd.payload.rc.eq(C)]
                    with m.If(vu.cmd.ready & vector_ok):
                        with m.If(vec_writes):
                            m.next = "VECTOR"
                        with m.Else():
                            next_instr()      # in the background
                with m.Elif((op >= min(SCALAR_OPS)) & (op <= max(SCALAR_OPS))):
                    m.d.comb += [su.instr.valid.eq(1), su.instr.payload.eq(ir)]
                    with m.If(su.instr.ready):
                        m.next = "SCALAR"
                with m.Else():        # NOP
                    next_instr()
            with m.State("SCALAR"):
                m.d.comb += pf_drive.eq(1)
                with m.If(su.instr.ready):
                    next_instr()
            with m.State("SLDC"):          # the CMEM word arrives READ_LATENCY + 1 cycles after ISSUE
                m.d.comb += pf_drive.eq(1)
                with m.If(sldc_wait != 0):
                    m.d.sync += sldc_wait.eq(sldc_wait - 1)
                with m.Else():
                    m.d.comb += [su_w.en.eq(1), su_w.addr.eq(rd), su_w.data.eq(cm0_data)]
                    next_instr()
            with m.State("VECTOR"):
                m.d.comb += pf_drive.eq(1)
                with m.If(vu.result.done):
                    m.d.sync += [v_we.eq(vu.result.rd_we), v_res.eq(vu.result.rd_data),
                                 v_we2.eq(vu.result.rc_we), v_res2.eq(vu.result.rc_data)]
                    m.next = "VECTOR_RD"
            with m.State("VECTOR_RD"):        # the registers written one per cycle, rc only if it is
                m.d.comb += pf_drive.eq(1)
                m.d.comb += [su_w.en.eq(v_we), su_w.addr.eq(rd), su_w.data.eq(v_res)]
                with m.If(v_we2):
                    m.next = "VECTOR_RC"
                with m.Else():
                    next_instr()
            with m.State("VECTOR_RC"):
                m.d.comb += pf_drive.eq(1)
                m.d.comb += [su_w.en.eq(v_we2), su_w.addr.eq(rc), su_w.data.eq(v_res2)]
                next_instr()
            with m.State("STEP_END"):
                with m.If(step_t + 1 >= fill):
                    m.d.comb += [tk_seq_wen.eq(1), tk_seq_waddr.eq(step_t + 1), tk_seq_wdata.eq(last_token)]
                m.d.sync += [step_t.eq(step_t + 1), steps_done.eq(steps_done + 1), tokens.eq(tokens + 1),
                             step_cycles.eq(cur_cycles), step_engine.eq(cur_engine)]
                with m.If(abort):
                    m.d.sync += run_error.eq(P.RunError.ABORTED)
                    begin_reset()
                with m.Elif(step_t + 1 == steps):
                    m.next = "END"
                with m.Else():
                    m.next = "STEP"
            with m.State("END"):
                with m.If(~vu_idle):
                    pass                # a background vector instruction finishes first
                with m.Elif(abort):       # a RESET came during the last instruction of a run
                    m.d.sync += run_error.eq(P.RunError.ABORTED)
                    begin_reset()
                with m.Else():
                    m.d.sync += [active.eq(0), resetting.eq(0)]
                    with m.If(reset_reply):
                        m.d.sync += reset_reply.eq(0)
                        reply(0)
                    m.next = "IDLE"

        # ------------------------------------------------------------------ link bridge
        lp = self.mem
        M = P.CoreMemory
        word_bits = eng.word_bits
        top = {M.PMEM: INSTR_BITS, M.WMEM: word_bits, M.CMEM: CMEM_BITS, M.TMEM: TMEM_BITS,
               M.SIGMEM: TMEM_BITS, M.VMEM: VMEM_BITS, M.TOKMEM: 16}
        shift = {mid: (info.stride(mid) - 1).bit_length() for mid in M}
        stage = Array(Signal(8, name=f"stage{i}", reset_less=True) for i in range((word_bits + 7) // 8))
        # A one-entry request register between the link and the memories: the link's request is
        # taken whenever the register is empty (``ready`` is a register bit, not a function of the
        # request) and served from it, so no path runs from the link's state machine through the
        # memory decode and back.
        q_valid, q_we, q_re = Signal(), Signal(), Signal()
        q_mid, q_addr, q_wdata = (Signal.like(v, reset_less=True) for v in (lp.mem, lp.addr, lp.wdata))
        m.d.comb += lp.ready.eq(~q_valid)
        with m.If(~q_valid & (lp.we | lp.re)):
            m.d.sync += [q_valid.eq(1), q_mid.eq(lp.mem), q_addr.eq(lp.addr), q_wdata.eq(lp.wdata),
                         q_we.eq(lp.we), q_re.eq(lp.re)]
        mid = q_mid
        byte_i = Signal(8)
        waddr = Signal(32)
        with m.Switch(mid):
            for k in M:
                with m.Case(int(k)):
                    m.d.comb += [byte_i.eq(q_addr[:shift[k]] if shift[k] else 0), waddr.eq(q_addr >> shift[k])]

        always = (mid == M.INFO) | (mid == M.CTRL) | ((mid == M.TOKMEM) & q_re)
        serve = Signal()
        m.d.comb += serve.eq(q_valid & (always | ~active))
        with m.If(serve):
            m.d.sync += q_valid.eq(0)
        take_w = q_we & serve
        take_r = q_re & serve

        def word_data(bits):
            nbytes = (bits + 7) // 8
            return Cat(*[stage[i] for i in range(nbytes - 1)], q_wdata)[:bits]

        def top_byte(bits):
            return (bits - 1) // 8

        with m.If(take_w & (byte_i < len(stage))):
            m.d.sync += stage[byte_i].eq(q_wdata)
        wr_en = {k: Signal(name=f"link_we_{k.name.lower()}") for k in top}
        for k, bits in top.items():
            m.d.comb += wr_en[k].eq(take_w & (mid == k) & (byte_i == top_byte(bits)))

        # write ports: the link when idle, the units while running
        # (PMEM, WMEM and TMEM are written by the link alone, while the core is idle: registered, so
        # the byte staging and the enable decode do not share a cycle with WMEM's 100-odd block RAMs)
        # (address and data registers without reset: they matter only with their enable)
        for port, bits, mid_w in ((pm_w, INSTR_BITS, M.PMEM), (eng.w_wr, word_bits, M.WMEM),
                                  (su.tmem_w, TMEM_BITS, M.TMEM)):
            w_addr = Signal.like(port.addr, name=f"link_w_addr_{mid_w.name.lower()}", reset_less=True)
            w_data = Signal.like(port.data, name=f"link_w_data_{mid_w.name.lower()}", reset_less=True)
            m.d.sync += [w_addr.eq(waddr), w_data.eq(word_data(bits)), port.en.eq(wr_en[mid_w])]
            m.d.comb += [port.addr.eq(w_addr), port.data.eq(w_data)]
        cmem.write([(waddr[:_bits(p["cmem_depth"])], word_data(CMEM_BITS), wr_en[M.CMEM])])
        for sm in (sigmem, sigmem_b):      # the link writes both copies
            sm.write([(waddr[:_bits(p["sig_depth"])], word_data(TMEM_BITS), wr_en[M.SIGMEM])])
        # The vector unit and the writeback never write in the same cycle (no vector instruction
        # that writes VMEM issues while a GEMV is outstanding); the lanes of each write
        # consecutive words (different banks); the link writes only while the core is idle.
        # So the unit's first write lane, the writeback's first and the link share one requester,
        # the unit's second lane and the writeback's second another (two per bank with the default
        # two-lane writeback; a four-lane one's other two lanes are requesters of their own).
        link_w = (waddr[:_bits(p["vmem_depth"])], word_data(VMEM_BITS), wr_en[M.VMEM])
        wb_w = [(w.addr, w.data, w.en) for w in wb.wr_ports]
        vu_w = [(w.addr, w.data, w.en) for w in (vu.vmem_wr, vu.vmem_wr2)]
        vmem.write([exclusive(m, "vmw0", [vu_w[0], wb_w[0], link_w])]
                   + ([exclusive(m, "vmw1", [vu_w[1], wb_w[1]])] if len(wb_w) > 1 else [vu_w[1]])
                   + wb_w[2:])
        with m.If(tk_seq_wen):
            m.d.comb += [tk_w.addr.eq(tk_seq_waddr), tk_w.data.eq(tk_seq_wdata), tk_w.en.eq(1)]
        with m.Else():
            m.d.comb += [tk_w.addr.eq(waddr), tk_w.data.eq(word_data(16)), tk_w.en.eq(wr_en[M.TOKMEM])]

        # read ports: the units while running (each enables its own reads), the link when idle
        link_re = {k: Signal(name=f"link_re_{k.name.lower()}") for k in M}
        for k in M:
            m.d.comb += link_re[k].eq(take_r & (mid == k))
        # (the link reads VMEM, SIGMEM only while the core is idle: it shares the unit's first port)
        vm_ports = [vu.vmem_rd, vu.vmem_rd2, vu.vmem_rd3, vu.vmem_rd4, *wb.rd_ports]
        vm_data = vmem.read([exclusive(m, "vmr0", [(vu.vmem_rd.addr, vu.vmem_rd.en),
                                                   (waddr[:_bits(p["vmem_depth"])], link_re[M.VMEM])])]
                            + [(r.addr, r.en) for r in vm_ports[1:]])
        vm_link_data = vm_data[0]
        m.d.comb += [r.data.eq(d) for r, d in zip(vm_ports, vm_data)]
        # CMEM: the vector unit's first port, SLDC and the link share one requester (they never read
        # in the same cycle: SLDC issues only while the unit is idle and holds the sequencer until
        # its word is back, the link reads only while the core is idle), which reaches every bank;
        # the unit's other seven ports are its four-lane paths' lanes, each wired to the two banks
        # it can address (CMEM_PORT_REACH): three requesters per bank.
        vu_cm = [getattr(vu, f"cmem_rd{k}") for k in ("", "2", "3", "4", "5", "6", "7", "8")]
        cm0_addr, cm0_en = exclusive(m, "cm0", [(vu.cmem_rd.addr, vu.cmem_rd.en), (cm_seq_addr, cm_seq_en),
                                                (waddr[:_bits(p["cmem_depth"])], link_re[M.CMEM])])
        cm_data = cmem.read([(cm0_addr, cm0_en, CMEM_PORT_REACH[0])]
                            + [(r.addr, r.en, reach) for r, reach in zip(vu_cm[1:], CMEM_PORT_REACH[1:])])
        m.d.comb += [r.data.eq(d) for r, d in zip(vu_cm, cm_data)]
        m.d.comb += cm0_data.eq(cm_data[0])
        sg_data = sigmem.read([exclusive(m, "sgr0", [(vu.sig_rd.addr, vu.sig_rd.en),
                                                     (waddr[:_bits(p["sig_depth"])], link_re[M.SIGMEM])]),
                               (vu.sig_rd2.addr, vu.sig_rd2.en)])
        sg_link_data = sg_data[0]
        m.d.comb += [vu.sig_rd.data.eq(sg_data[0]), vu.sig_rd2.data.eq(sg_data[1])]
        sg_data_b = sigmem_b.read([(vu.sig_rd3.addr, vu.sig_rd3.en), (vu.sig_rd4.addr, vu.sig_rd4.en)])
        m.d.comb += [vu.sig_rd3.data.eq(sg_data_b[0]), vu.sig_rd4.data.eq(sg_data_b[1])]
        with m.If(~active):
            m.d.comb += [pm_r.addr.eq(waddr), pm_r.en.eq(link_re[M.PMEM])]
        m.d.comb += [tk_lr.addr.eq(waddr), tk_lr.en.eq(link_re[M.TOKMEM]),
                     eng.w_rd.addr.eq(waddr), su.tmem_r.addr.eq(waddr)]

        # INFO and CTRL records
        info_bytes = info.pack()
        ctrl = Signal(8 * P.RunStatus.SIZE)
        state = Mux(active, Mux(resetting, P.RunState.RESETTING, P.RunState.RUNNING), P.RunState.IDLE)
        state_v = Signal(8)
        m.d.comb += state_v.eq(state)

        def field(v, width):
            return Cat(v, Const(0, width - len(v))) if len(v) < width else v[:width]

        m.d.comb += ctrl.eq(Cat(state_v, run_error, field(loaded, 8), Const(0, 8), steps_done, field(steps, 32),
                                step_cycles, step_engine, run_cycles, tokens, last_token, Const(0, 16)))
        assert len(ctrl) == 8 * P.RunStatus.SIZE

        # read data: cycle t request; t + 1 the data of PMEM, TMEM, TOKMEM, registered whole
        # (t + 2: no block-RAM output feeds a byte multiplexer in its own cycle), its byte (or
        # INFO's, CTRL's) registered at t + 3; t + 2 the data of WMEM (the engine registers its
        # address), registered whole at t + 3; t + 3 the data of VMEM, CMEM, SIGMEM
        # (READ_LATENCY); t + 4 the selected byte with rvalid.
        r_mid = Signal(8, reset_less=True)
        r_byte = Signal(8, reset_less=True)
        r_addr = Signal(8, reset_less=True)
        r_pend = Signal(READ_LATENCY)
        m.d.sync += r_pend.eq(Cat(take_r, r_pend[:-1]))
        with m.If(take_r):
            m.d.sync += [r_mid.eq(mid), r_byte.eq(byte_i), r_addr.eq(q_addr[:8])]
        sel_a = Signal(8)           # t + 2: the latency-1 memories (registered words) and the records
        pm_q = Signal.like(pm_r.data, name="pm_q", reset_less=True)
        w_q = Signal.like(eng.w_rd.data, name="w_q", reset_less=True)
        tm_q = Signal.like(su.tmem_r.data, name="tm_q", reset_less=True)
        tk_q = Signal.like(tk_lr.data, name="tk_q", reset_less=True)
        m.d.sync += [pm_q.eq(pm_r.data), w_q.eq(eng.w_rd.data), tm_q.eq(su.tmem_r.data), tk_q.eq(tk_lr.data)]
        sel_b = Signal(8)           # t + 3: the registered-port memories

        def byte_of(value, width):
            v = value.as_unsigned() if hasattr(value, "as_unsigned") else value
            nbytes = (width + 7) // 8
            return Array(v[8 * i:8 * i + 8] for i in range(nbytes))[r_byte[:max(1, (nbytes - 1).bit_length())]]

        info_rom = Array(Const(b, 8) for b in info_bytes)
        ctrl_bytes = Array(ctrl[8 * i:8 * i + 8] for i in range(P.RunStatus.SIZE))
        slow = (r_mid == M.CMEM) | (r_mid == M.SIGMEM) | (r_mid == M.VMEM) | (r_mid == M.WMEM)
        with m.Switch(r_mid):
            with m.Case(M.INFO):
                m.d.comb += sel_a.eq(Mux(r_addr < len(info_bytes), info_rom[r_addr[:6]], 0))
            with m.Case(M.CTRL):
                m.d.comb += sel_a.eq(ctrl_bytes[r_addr[:5]])
            with m.Case(M.PMEM):
                m.d.comb += sel_a.eq(byte_of(pm_q, INSTR_BITS))
            with m.Case(M.WMEM):          # the engine registers the address: a 2-cycle read
                m.d.comb += sel_b.eq(Mux(r_byte < (word_bits + 7) // 8, byte_of(w_q, word_bits), 0))
            with m.Case(M.TMEM):
                m.d.comb += sel_a.eq(Mux(r_byte < 3, byte_of(tm_q, TMEM_BITS), 0))
            with m.Case(M.TOKMEM):
                m.d.comb += sel_a.eq(byte_of(tk_q, 16))
            with m.Case(M.CMEM):
                m.d.comb += sel_b.eq(Mux(r_byte < 3, byte_of(cm0_data, CMEM_BITS), 0))
            with m.Case(M.SIGMEM):
                m.d.comb += sel_b.eq(Mux(r_byte < 3, byte_of(sg_link_data, TMEM_BITS), 0))
            with m.Case(M.VMEM):
                m.d.comb += sel_b.eq(Mux(r_byte < 5, byte_of(vm_link_data, VMEM_BITS), 0))
        sel_a_d = sel_a
        for i in range(READ_LATENCY - 2):
            r = Signal(8, name=f"sel_a_d{i}")
            m.d.sync += r.eq(sel_a_d)
            sel_a_d = r
        m.d.sync += [lp.rvalid.eq(r_pend[-1]), lp.rdata.eq(Mux(slow, sel_b, sel_a_d))]
        return m
