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
* ``vmem_rd`` .. ``vmem_rd4`` / ``vmem_wr``, ``vmem_wr2`` -- VMEM (36-bit signed words): the
  core's registered read ports (``data`` ``READ_LATENCY`` = 3 cycles after ``en``, ``hw.core.ports``)
  and write ports.
* ``cmem_rd`` .. ``cmem_rd8`` -- CMEM (18-bit signed); ``sig_rd``, ``sig_rd2`` -- the first copy of
  SIGMEM (18-bit unsigned sigmoid table), ``sig_rd3``, ``sig_rd4`` -- the second.
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
* lanes b, c, d of the wide paths: ``SZb``..``SZd``, ``MZ1b``..``MZ1d``, ``MZ2b``..``MZ2d``,
  ``MWb``..``MWd`` (``VNQA``, ``VUMAX2``: four lanes; ``VGLU``: lane b), ``STb``..``STd`` (``VQ``, whose
  wide path takes its elements in groups of four, ``4j .. 4j + 3``, one word of each VMEM bank and
  of four CMEM banks, and writes four codes into adjacent byte lanes per cycle).
* ``MUL_A`` (44) and ``MUL_B`` (37) are not narrowed further: they bound the exactness domain
  (below), which the bench exercises with full 36-bit words (``z'`` of a 36-bit word shifted by
  0, ``v`` of 37 bits squared, ``om`` and ``target - s`` of ``VREC``).
* one 19 x 11 interpolation multiplier per sigmoid unit (``SIGMEM[k + 1] - SIGMEM[k]``, 19 bits
  signed, times the fraction, at most 10 bits): exact for any table contents.
* rounding shifters (``round_shift`` half away from zero by a signed amount; ``<= 0`` is an exact
  left shift, a shift beyond the operand gives 0), each as wide as its values: ``SZ`` (``z'``,
  ``VEMB``'s left shift, ``rshift(y, R[rb])``: a 36-bit VMEM word in, 64 bits out) and
  ``SZb``..``SZd`` (36 in, ``MUL_A`` out), ``ST``..``STd`` (``R[rc]`` shifts of ``VQ`` and
  ``VREC``: the ``MUL_A + 18``-bit product in, ``MUL_A`` out), the input rescale (``F - 16``,
  right shifts only) of each sigmoid unit, 36 bits; a 30-bit interpolation shifter (by ``F - 6``) per
  sigmoid unit; and registered rounding shifts by the constants 16, 17 and 25.

Every multiplier is built from 18 x 18 tiles (unsigned 17-bit slices and a signed top slice of
each operand): registered operands, registered tile products, then a binary tree of registered
adds, padded to ``MUL_LATENCY`` = 6 for ``MZ1``, ``MZ2`` and ``MW`` (operands set in step ``k``,
product in step ``k + 6``; 3 for the 19 x 11 ones). Every variable shifter has three stages
(operand and amount registered; barrel shifts and sticky bit; rounding add): result in step
``k + SHIFT_LATENCY`` = ``k + 3``. Memory data arrives ``READ_LATENCY`` = 3 steps after the
request. The sigmoid (``Core._sigmoid``: optional rescale to 16 fractional bits, clamp, table
index and fraction, two table reads, interpolation multiply and shift, odd symmetry) is a unit of
its own, two of them (F from ``R[ra]``: ``VGLU``, ``VREC``'s ``i``; F from ``R[rb]``: ``VREC``'s
``f``, and ``R[ra]`` for ``VGLU``'s second lane), each on its own copy of SIGMEM, with its input in step ``s``, its two SIGMEM reads in ``s + 5`` and the result in
``s + 16``. Values carried between steps of an element go through free-running delay
registers (one per cycle of distance), so the step lists are modulo-scheduled: element ``e``
runs step ``k`` in cycle ``e * II + k`` of the run, ``II = INTERVAL[op]``; steps of the elements
in flight at the same time never share a unit or a memory port (checked at elaboration: the
steps of one opcode that use the same unit or port lie in distinct residue classes mod ``II``),
and elements finish in order. A start token (element index, valid bit) moves down a shift
register one step per cycle, so a step's condition is one register bit. The reductions (max ``|written|``, sum of squares, max,
argmax) are registers updated in one step (from a registered absolute value for the products).

Cycles, measured by ``sim/tb_vector_unit.py`` (accepted in cycle ``t``, ``done`` in cycle
``t + cycles(op, n)`` = ``t + OVERHEAD + (n - 1) * INTERVAL[op] + ELEMENT_CYCLES[op]``; the
testbench asserts it for every instruction)::

    opcode    cycles per element (II)          steps (depth)   wide path: elements per cycle, depth
    VSET      1                                3
    VEMB      1                                9
    VADD      2  (two VMEM reads)              8
    VMAXABS   1                                5
    VARGMAX   1 per group of 4 elements         6
    VNQA      2  (two CMEM reads: a2, a0)      20              4, 22  (a2 = 0 mod 4, a0 - a2 = 4 mod 8)
    VUMAX2    2  (two CMEM reads: a2, a0)      15              4, 16  (a2 = 0 mod 4, a0 - a2 = 4 mod 8)
    VQ        1                                24              4, 24  (a2 = 0 mod 4)
    VGLU      2  (two VMEM reads)              35              2, 37  (a2 - a1 = 2 mod 4)
    VREC      4  (three VMEM reads)            41              1, 39  (f, i, s: three banks)
    fixed: OVERHEAD = 2 cycles (one set-up cycle and the done cycle)

The core's VMEM is four banks by address modulo 4, CMEM eight by address modulo 8, SIGMEM two
copies of two banks by parity (``hw.core.ports.BankedMemory``); the unit has four read ports on
VMEM, eight on CMEM, two on each SIGMEM copy, and two VMEM write ports. Reads in one cycle are
served when they address different banks. A sigmoid's two table reads (``k``, ``k + 1``) always
do, so each sigmoid reads both in one step. The slow intervals are the floors of one read per
memory and cycle: ``VNQA`` and ``VUMAX2`` read ``C[a2]`` and ``C[a0]`` per element (also for
``rc = 0``), ``VGLU`` reads ``x[a1]`` and ``x[a2]``, ``VREC`` three VMEM words and two sigmoids.
The paths (:func:`path`): when an instruction's streams start on banks that keep its reads of one
cycle apart, it runs on its wide path, otherwise on the slow one (no layout is refused). Wide: the
loop elements are groups of ``WIDE_LANES`` vector elements on as many datapath lanes, one group
per cycle (VNQA, VUMAX2: four elements, their eight CMEM words in the eight banks when ``a2`` is
0 modulo 4 and ``a0 - a2 = 4`` modulo 8; VQ: four elements when ``a2`` is 0 modulo 4, as each
lane's CMEM port reaches two banks, :data:`CMEM_PORT_REACH`; VGLU: two, its four VMEM words in
the four banks when ``a2 - a1 = 2`` modulo 4);
VREC's wide path is one element per cycle, reading ``s[j]`` :data:`VREC_S_LAG` elements behind
``f`` and ``i`` from a third bank. The compiler lays VMEM and CMEM out so that the shipped
programs run every ``VNQA``, ``VUMAX2``, ``VQ``, ``VGLU`` and ``VREC`` on its wide path. The path
depends on the instruction's fields, never on the data.

``n = 0`` and non-vector opcodes: ``done`` in cycle ``t + 1``. ``busy`` (and ``cmd.ready`` low)
covers cycles ``t + 1`` to the ``done`` cycle, so the next instruction can be accepted in the
cycle after ``done``.

Exactness domain: the results equal the executor's for every instruction it accepts whose
intermediate values fit the datapath: multiplier operands within ``MUL_A`` (the vector-side
value: ``z'``, ``rshift(u, R[rc])``, ``i``, ``target - s``, ``rshift(y, R[rb])``, the SiLU factor
``sy``) and ``MUL_B`` bits signed (``VQ``'s ``R[ra]``, ``x[a2]`` of ``VGLU``), ``rshift(u, R[rc])``
of ``VQ`` and ``VREC``'s target computed from the ``MUL_A + 18``-bit product ``u`` (a left shift
keeps ``MUL_A`` bits), ``VEMB``'s result within 64 bits before the saturation (any shift the
executor accepts, 0 .. 45, of an 18-bit word). The executor computes in int64 and silently wraps beyond it, so its own results are
meaningful only in a narrower domain. Source and destination ranges must not overlap with the
destination ahead of a source (``a_src < a0 < a_src + n``): the executor reads all sources before
writing, this unit may read a word after an earlier element of the same instruction wrote it (a
destination at or behind its sources, ``a0 <= a_src``, e.g. in place, is exact: every step list
reads an element's sources before it writes the element).

Timing (aimed at 75 MHz on the ECP5; measured standalone in the harness of ``bench/pe_sweep.py``,
``bench/vector_build.py``): at most one wide operation per stage -- a tile product, one add of
the product tree, a barrel shift with its sticky OR, a rounding add, the clamp comparisons of a
written value (its selection and absolute value are the next stage). Multipliers: eight 44 x 18
(``MZ1``, ``MZ2`` and their lanes b-d), four 44 x 37 (``MW``, ``MWb``-``MWd``), two 19 x 11: 64
``MULT18X18D`` after synthesis, the smallest tiles in LUTs (``python bench/core_blocks.py --only
vector``, which also counts the unit's LUT4 and flip-flops).
"""

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sw.isa import REG_BITS, VMEM_BITS, Op

from .ports import READ_LATENCY, UNIT_CMD_LAYOUT, MemReadSignature, MemWriteSignature, UnitResultSignature

__all__ = ["VectorUnit", "ELEMENT_CYCLES", "INTERVAL", "OVERHEAD", "cycles",
           "GROUPED", "WIDE_ELEMENT_CYCLES", "WIDE_LANES", "WIDE_PAIR", "VREC_S_LAG", "path",
           "CMEM_BANKS", "CMEM_PORT_REACH", "CMEM_ALIGNED",
           "MUL_A", "MUL_B", "MUL_LATENCY", "SHIFT_LATENCY"]

#: Steps (cycles) of one element of each vector opcode.
ELEMENT_CYCLES = {
    Op.VSET: 3, Op.VEMB: 9, Op.VADD: 8, Op.VMAXABS: 5, Op.VARGMAX: 6,
    Op.VNQA: 20, Op.VUMAX2: 15, Op.VQ: 24, Op.VGLU: 35, Op.VREC: 41,
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
#: The opcodes whose loop elements are groups of this many vector elements (``4j .. 4j + 3``: one
#: word of each of the four VMEM and CMEM banks), as many datapath lanes: their interval and
#: element cycles are per group.
GROUPED = {Op.VARGMAX: 4}
#: The opcodes with a two-lane path: when their constant streams ``C[a2 + j]`` and ``C[a0 + j]``
#: start two words apart modulo 4 (CMEM is four banks by address modulo 4, and the compiler places
#: them so), the loop elements are pairs of vector elements (``2j``, ``2j + 1``), the four CMEM
#: words of a pair are read in one cycle (one per bank, the unit's four CMEM read ports) and the
#: two elements go down two datapath lanes: one pair per cycle, this many steps per pair.
#: VGLU likewise, with its two VMEM streams ``x[a1 + j]`` and ``x[a2 + j]`` (VMEM is four banks too)
#: and a sigmoid unit per lane (SIGMEM is two copies of two banks).
#: VREC's wide path is one lane at one element per cycle: its three VMEM streams ``f`` (``a2``),
#: ``i`` (``a1``) and the state ``s`` (``a0``, read :data:`VREC_S_LAG` steps later) in three
#: different banks (:func:`path`), its two sigmoids on the two copies of SIGMEM.
WIDE_ELEMENT_CYCLES = {Op.VNQA: 22, Op.VUMAX2: 16, Op.VQ: 24, Op.VGLU: 37, Op.VREC: 39}
#: Vector elements per loop element on the wide path (datapath lanes).
WIDE_LANES = {Op.VNQA: 4, Op.VUMAX2: 4, Op.VQ: 4, Op.VGLU: 2, Op.VREC: 1}
#: The two streams (first, second) whose start addresses must differ by ``lanes`` modulo
#: ``2 * lanes`` for it (the two streams' words of one loop element in different banks).
WIDE_PAIR = {Op.VNQA: ("a2", "a0"), Op.VUMAX2: ("a2", "a0"), Op.VGLU: ("a1", "a2")}
#: CMEM's banks (by address modulo 8) and the banks each of the unit's CMEM read ports reads
#: (``cmem_rd``, ``cmem_rd2`` .. ``cmem_rd8``): the first serves every one-element path and lane 0
#: of the four-lane paths, any bank; lane k of a four-lane path reads ``C[a2 + 4j + k]`` on port
#: ``k + 1`` and ``C[a0 + 4j + k]`` on port ``k + 5``, and as those paths run only when the
#: streams start at 0 modulo 4 (:data:`CMEM_ALIGNED`), always in bank ``k`` or ``k + 4``. The core
#: wires each port to those banks alone (``hw.core.ports.BankedMemory``: a 2:1 data multiplexer
#: instead of 8:1, three requesters per bank instead of ten).
CMEM_BANKS = 8
CMEM_PORT_REACH = ([tuple(range(CMEM_BANKS))] + [(k, k + 4) for k in range(1, 4)]
                   + [(k, k + 4) for k in range(4)])
#: The opcodes whose four-lane path reads CMEM and needs ``a2`` at 0 modulo 4 (and ``a0`` too, which
#: :data:`WIDE_PAIR` puts 4 modulo 8 from it).
CMEM_ALIGNED = (Op.VNQA, Op.VUMAX2, Op.VQ)
#: Steps between VREC's reads of ``f``, ``i`` of an element and of its ``s`` on the wide path: the
#: read of ``s[j]`` shares a cycle with those of ``f[j + VREC_S_LAG]`` and ``i[j + VREC_S_LAG]``.
VREC_S_LAG = 25


def path(op, a0: int, a1: int, a2: int) -> str:
    """The path the instruction runs on: ``"wide"`` (:data:`WIDE_LANES` elements per cycle,
    :data:`WIDE_ELEMENT_CYCLES`) or ``"slow"`` (:data:`INTERVAL`); it depends on the opcode and the
    start addresses alone."""
    op = Op(op)
    f = {"a0": a0, "a1": a1, "a2": a2}
    if op in CMEM_ALIGNED and a2 % 4:
        return "slow"
    if op == Op.VQ:
        return "wide"
    if op in WIDE_PAIR:
        x, y = WIDE_PAIR[op]
        if (f[y] - f[x]) % (2 * WIDE_LANES[op]) == WIDE_LANES[op]:
            return "wide"
    if op == Op.VREC and (a1 ^ a2) & 1 and (a0 - VREC_S_LAG - a1) % 4 and (a0 - VREC_S_LAG - a2) % 4:
        return "wide"
    return "slow"


def cycles(op, n: int, path: str = "slow") -> int:
    """Cycles from accepting a vector instruction (cycle ``t``) to its ``done`` (cycle ``t + cycles``)
    on the given :func:`path`."""
    op = Op(op)
    if path not in ("slow", "wide"):
        raise ValueError(f"path must be 'slow' or 'wide', not {path!r}")
    if op not in ELEMENT_CYCLES or n == 0:
        return 1
    if path == "wide" and op in WIDE_ELEMENT_CYCLES:
        return OVERHEAD + (n + WIDE_LANES[op] - 1) // WIDE_LANES[op] - 1 + WIDE_ELEMENT_CYCLES[op]
    if op in GROUPED:
        n = (n + GROUPED[op] - 1) // GROUPED[op]
    return OVERHEAD + (n - 1) * INTERVAL[op] + ELEMENT_CYCLES[op]

MUL_A = 44        #: multiplier operand A, signed bits
MUL_B = 37        #: multiplier operand B, signed bits
_PROD_Z = MUL_A + 18   #: bits of a product z' x C (MZ1, MZ2: the ST shifters' input)
_VEMB_BITS = 64   #: the SZ shifter's result: VEMB's 18-bit word shifted left by up to 45, to saturate
MUL_LATENCY = 6   #: steps from setting the operands of MZ1, MZ2, MW to their product
SHIFT_LATENCY = 3  #: steps from setting a variable rounding shifter to its result
_SH = 8           #: shift amounts are clamped to [-127, 127] (signed 8 bits)
_CMEM_BITS = 18
_SIG_BITS = 18


class _Steps(dict):
    """A step dict (step -> callable or tuple of callables) with :meth:`add`, which appends a
    callable to a step instead of replacing it."""

    def add(self, k, f):
        if k in self:
            prev = self[k]
            self[k] = (prev if isinstance(prev, tuple) else (prev,)) + (f,)
        else:
            self[k] = f


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
        if lanes % 4:
            raise ValueError(f"lanes must be a multiple of 4 (VQ writes four codes per cycle), not {lanes}")
        self._vmem_depth, self._cmem_depth, self._sig_depth = vmem_depth, cmem_depth, sig_depth
        self._lanes, self._chunks_max = lanes, chunks_max
        self.vaw, self.caw, self.saw = _aw(vmem_depth), _aw(cmem_depth), _aw(sig_depth)
        self.aaw = _aw(2 * chunks_max)
        super().__init__({
            "cmd": In(stream.Signature(UNIT_CMD_LAYOUT)),
            "result": Out(UnitResultSignature()),
            "busy": Out(1),
            "vmem_rd": Out(MemReadSignature(self.vaw, signed(VMEM_BITS))),
            "vmem_rd2": Out(MemReadSignature(self.vaw, signed(VMEM_BITS))),
            "vmem_rd3": Out(MemReadSignature(self.vaw, signed(VMEM_BITS))),
            "vmem_rd4": Out(MemReadSignature(self.vaw, signed(VMEM_BITS))),
            "vmem_wr": Out(MemWriteSignature(self.vaw, signed(VMEM_BITS))),
            "vmem_wr2": Out(MemWriteSignature(self.vaw, signed(VMEM_BITS))),
            "cmem_rd": Out(MemReadSignature(self.caw, signed(_CMEM_BITS))),
            "cmem_rd2": Out(MemReadSignature(self.caw, signed(_CMEM_BITS))),
            **{f"cmem_rd{k}": Out(MemReadSignature(self.caw, signed(_CMEM_BITS))) for k in range(3, 9)},
            "sig_rd": Out(MemReadSignature(self.saw, unsigned(_SIG_BITS))),
            "sig_rd2": Out(MemReadSignature(self.saw, unsigned(_SIG_BITS))),
            "sig_rd3": Out(MemReadSignature(self.saw, unsigned(_SIG_BITS))),
            "sig_rd4": Out(MemReadSignature(self.saw, unsigned(_SIG_BITS))),
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
        RL = READ_LATENCY

        # ------------------------------------------------------------ instruction registers
        # (no reset: loaded when an instruction is accepted, read only while it runs)
        ir = Signal(128, reset_less=True)
        rA, rB, rC = (Signal(signed(REG_BITS), name=f"r{x}", reset_less=True) for x in "ABC")
        op, sat = ir[0:6], ir[6:12]
        rc_f = ir[27:32]
        n, a0, a1, a2 = ir[32:48], ir[48:68], ir[68:88], ir[88:108]
        imm = ir[108:128].as_signed()

        accept = Signal()
        m.d.comb += [self.cmd.ready.eq(~self.busy), accept.eq(self.cmd.valid & self.cmd.ready)]

        # ------------------------------------------------------------ per-instruction set-up
        # (no reset: set in SETUP, read while the instruction runs)
        shz = Signal(signed(_SH), reset_less=True)   # clamp(R[rb]): z' / y shift (VNQA, VUMAX2, VQ, VGLU), VEMB shift
        shc = Signal(signed(_SH), reset_less=True)   # clamp(R[rc]): VQ t, VREC target shift
        fsh = [Signal(unsigned(7), name=f"fsh{k}", reset_less=True) for k in range(2)]   # max(F - 16, 0), clamped
        fb = [Signal(range(11), name=f"fb{k}", reset_less=True) for k in range(2)]       # min(F, 16) - 6
        sat_hi, sat_lo = Signal(signed(38), reset_less=True), Signal(signed(38), reset_less=True)

        # ------------------------------------------------------------ element pipeline
        # Element e starts (step 0) in cycle e * II of the RUN state; a start token (its index and a
        # valid bit) then moves one step per cycle down jp / vp, so step k runs for element jp[k]
        # whenever vp[k] is set, whatever the interval. The step conditions are thus single
        # register bits and the element index a register (no comparator in front of a unit).
        LMAX = max(ELEMENT_CYCLES.values())
        ph = Signal(range(4))
        e_new = Signal(17)
        more = Signal()                     # elements left to start
        ne = Signal(16)                     # elements of the loop: n, or n / 2 rounded up (PAIRED)
        nm1 = Signal(16)                    # ne - 1
        start = Signal()
        jp = [e_new[:16]] + [Signal(16, name=f"jp{k}", reset_less=True) for k in range(1, LMAX)]
        vp = [start] + [Signal(name=f"vp{k}") for k in range(1, LMAX)]
        for k in range(1, LMAX):
            m.d.sync += [jp[k].eq(jp[k - 1]), vp[k].eq(vp[k - 1])]
        j = None
        jl = Signal(range(lanes))           # lane and word of the next VQ code
        jw = Signal(16)

        # ------------------------------------------------------------ pipeline registers
        # Every stage register below is written in every cycle (``free``, added at the top level),
        # so a value seen in step k of an element is ``dly(value, d)`` in its step k + d, whatever
        # the interval. The steps only drive unit inputs, memory ports, writes and reductions.
        free = []

        def reg(v, name, shape=None):
            # No reset: the register is rewritten every cycle and read only by steps of a valid
            # element (the start token's valid bits, the reductions and the control state keep
            # their reset), so the reset net need not reach these 16,000 flip-flops.
            r = Signal(Value.cast(v).shape() if shape is None else shape, name=name, reset_less=True)
            free.append(r.eq(v))
            return r

        def dly(v, d, name="dly"):
            v = Value.cast(v)
            for i in range(d):
                v = reg(v, f"{name}{i}")
            return v

        # Resource use of the step being built (checked below: two steps of one opcode that use the
        # same unit or memory port must lie in distinct residue classes mod its interval).
        ctx = {}
        uses = {}

        def use(res):
            if ctx:
                uses.setdefault((ctx["op"], res), []).append(ctx["k"])

        # ------------------------------------------------------------ multipliers
        def mul_unit(name, wa, wb, lat=None):
            """Signed wa x wb multiplier built from 18 x 18 tiles (unsigned 17-bit slices and a signed
            top slice): registered operands, registered tile products, then a binary tree of
            registered adds, padded to ``lat``. Operands set in step k give the product in k + lat."""
            a, b = Signal(signed(wa), name=f"{name}_a"), Signal(signed(wb), name=f"{name}_b")
            ra, rb = reg(a, f"{name}_ra"), reg(b, f"{name}_rb")

            def slices(v, w):
                out, lo = [], 0
                while w - lo > 18:
                    out.append((lo, Cat(v[lo:lo + 17], Const(0, 1)).as_signed()))
                    lo += 17
                out.append((lo, v[lo:w].as_signed()))
                return out
            terms = sorted(((la + lb, reg(sa * sb, f"{name}_t{la}_{lb}"))
                            for la, sa in slices(ra, wa) for lb, sb in slices(rb, wb)), key=lambda t: t[0])
            natural, level = 2, 0
            while len(terms) > 1:
                nxt = [(o1, reg(p1 + (p2 << (o2 - o1)), f"{name}_s{level}_{i}"))
                       for i, ((o1, p1), (o2, p2)) in enumerate(zip(terms[0::2], terms[1::2]))]
                if len(terms) % 2:
                    nxt.append((terms[-1][0], reg(terms[-1][1], f"{name}_s{level}_c")))
                terms, natural, level = nxt, natural + 1, level + 1
            assert terms[0][0] == 0
            lat = natural if lat is None else lat
            assert lat >= natural, (name, lat, natural)
            p = dly(terms[0][1][:wa + wb].as_signed(), lat - natural, f"{name}_pd")

            def set_(x, y):
                use(name)
                m.d.comb += [a.eq(x), b.eq(y)]
            return SimpleNamespace(set=set_, p=p, lat=lat)

        MZ1 = mul_unit("mz1", MUL_A, _CMEM_BITS, MUL_LATENCY)   # z' C[a2]; i sigmoid(i); rshift(y) sigmoid(y)
        MZ2 = mul_unit("mz2", MUL_A, _CMEM_BITS, MUL_LATENCY)   # z' C[a0]; (1 - lb)(1 - sigmoid(f))
        MW = mul_unit("mw", MUL_A, MUL_B, MUL_LATENCY)          # v v; rshift(u, t) R[ra]; sy x; om (target - s)

        # ------------------------------------------------------------ rounding shifters
        def shift_unit(name, bits, out_bits=None, left=True):
            """round_shift of a ``bits``-bit signed value by a signed amount (``<= 0``: exact left
            shift; with ``left=False`` the amount is never negative) to ``out_bits`` (default
            ``bits``; a left shift keeps the low ``out_bits`` bits) in three stages: input and
            amount registered; barrel shifts and sticky bit; rounding add. Set in step k, result
            in step k + SHIFT_LATENCY."""
            out_bits = bits if out_bits is None else out_bits
            x, s = Signal(signed(bits), name=f"{name}_x"), Signal(signed(_SH), name=f"{name}_s")
            xr = reg(x, f"{name}_xr")
            rs = reg((s - 1)[:7], f"{name}_rs", 7)
            pos = reg(s > 0, f"{name}_pos")
            t = reg(xr >> rs, f"{name}_t", signed(bits))
            sticky = reg((xr.as_unsigned() & Cat(*[rs > i for i in range(bits)])).any(), f"{name}_sticky")
            if left:
                ls = reg((-s)[:7], f"{name}_ls", 7)
                lv = reg((xr << ls)[:out_bits], f"{name}_left", signed(out_bits))
            else:
                lv = reg(xr, f"{name}_left")      # amount 0
            inc = reg(~xr[-1], f"{name}_inc")
            pos2 = reg(pos, f"{name}_pos2")
            r = reg(Mux(pos2, (t + (inc | sticky)) >> 1, lv), f"{name}_r", signed(out_bits))

            def set_(v, a):
                use(name)
                m.d.comb += [x.eq(v), s.eq(a)]
            return SimpleNamespace(set=set_, r=r, x=x, s=s)

        # z' = rshift(x, R[rb]); VEMB's left shift (an 18-bit word by up to 45); rshift(y, R[rb])
        SZ = shift_unit("sz", VMEM_BITS, _VEMB_BITS)
        ST = shift_unit("st", _PROD_Z, MUL_A)    # rshift(u, R[rc]) (VQ); target shift (VREC)

        def cshift(v, s, name):
            """Registered round_shift by the constant s (result one step after v)."""
            return reg(_round_shift_const(v, s), name)

        c17 = cshift(MZ1.p, 17, "c17")      # VNQA: v = rshift(z' C[a2], 17)
        c16z1 = cshift(MZ1.p, 16, "c16z1")  # VGLU: sy
        c16z2 = cshift(MZ2.p, 16, "c16z2")  # VREC: om
        c16w = cshift(MW.p, 16, "c16w")     # VREC: rshift(om (target - s), 16)
        c25 = cshift(MW.p, 25, "c25")       # VQ

        # ------------------------------------------------------------ memories
        # Read data arrives READ_LATENCY steps after the request (``hw.core.ports``).
        X, X2, X3, X4 = self.vmem_rd.data, self.vmem_rd2.data, self.vmem_rd3.data, self.vmem_rd4.data
        Cd, Cd2, Cd3, Cd4, Cd5, Cd6, Cd7, Cd8 = (getattr(self, f"cmem_rd{k}").data
                                                 for k in ("", "2", "3", "4", "5", "6", "7", "8"))
        Sd, Sd2, Sd3, Sd4 = self.sig_rd.data, self.sig_rd2.data, self.sig_rd3.data, self.sig_rd4.data

        def reader(name):
            """``f(addr)``: a read request on the port ``name`` in the step being built."""
            port = getattr(self, name)

            def f(addr):
                use(name)
                m.d.comb += [port.addr.eq(addr), port.en.eq(1)]
            return f
        vrd, vrd2, vrd3, vrd4 = (reader(f"vmem_rd{k}") for k in ("", "2", "3", "4"))
        crds = [reader(f"cmem_rd{k}") for k in ("", "2", "3", "4", "5", "6", "7", "8")]
        crd, crd2, crd3, crd4 = crds[:4]
        srd, srd2, srd3, srd4 = (reader(f"sig_rd{k}") for k in ("", "2", "3", "4"))

        def satv(v):
            c = Mux(sat == 0, v, _clamp(v, sat_lo, sat_hi))
            return c[:VMEM_BITS].as_signed()

        # ------------------------------------------------------------ reductions
        # (no reset: cleared when an instruction is accepted)
        mx = Signal(_PROD_Z, reset_less=True)      # max |written| / max |x| / max |z' C[a2]|
        mx_c = Signal(_PROD_Z, reset_less=True)    # max |z' C[a0]|
        acc = Signal(64, reset_less=True)                    # sum of squares
        best = Signal(signed(VMEM_BITS), reset_less=True)
        arg = Signal(16, reset_less=True)

        def saturated(v, name):
            """``(w, |w|)``: v of two steps back saturated to ``sat`` bits (the clamp comparisons are
            a stage of their own, the selection and |.| the next one)."""
            vr = reg(v, f"wv{name}")
            hi = reg((sat != 0) & (v > sat_hi), f"whi{name}")
            lo = reg((sat != 0) & (v < sat_lo), f"wlo{name}")
            sel = Mux(hi, sat_hi, Mux(lo, sat_lo, vr))[:VMEM_BITS].as_signed()
            return reg(sel, f"w{name}", signed(VMEM_BITS)), reg(_abs(sel), f"aw{name}", unsigned(VMEM_BITS))

        def vwrite(v):
            """Write v of two steps back, saturated, to x[a0 + j]; track max |written|."""
            use("vmem_wr")
            w, aw = saturated(v, "")
            m.d.comb += [self.vmem_wr.addr.eq(a0 + j), self.vmem_wr.data.eq(w), self.vmem_wr.en.eq(1)]
            with m.If(aw > mx):
                m.d.sync += mx.eq(aw)

        def vwrite2(va, vb, k):
            """Two lanes of :func:`vwrite` for a step list whose step ``k`` writes ``va`` to
            ``x[a0 + 2j]`` and ``vb`` to ``x[a0 + 2j + 1]`` (if ``2j + 1 < n``); returns the callables of
            step ``k`` (the writes) and ``k + 1`` (max |written|: the larger |.| is registered first)."""
            (wa, awa), (wb, awb) = saturated(va, "a"), saturated(vb, "b")
            jk = jp[k]
            second = Cat(Const(1, 1), jk) < n
            awm = reg(Mux(awa > Mux(second, awb, 0), awa, Mux(second, awb, 0)), "awm", unsigned(VMEM_BITS))

            def write():
                use("vmem_wr")
                use("vmem_wr2")
                m.d.comb += [self.vmem_wr.addr.eq(a0 + 2 * jk), self.vmem_wr.data.eq(wa), self.vmem_wr.en.eq(1),
                             self.vmem_wr2.addr.eq(a0 + 2 * jk + 1), self.vmem_wr2.data.eq(wb),
                             self.vmem_wr2.en.eq(second)]

            def track():
                with m.If(awm > mx):
                    m.d.sync += mx.eq(awm)
            return write, track

        # ------------------------------------------------------------ sigmoid units
        def sigmoid_unit(c):
            """``Core._sigmoid`` with F from config c, its own shifters and interpolation multiplier.
            ``start(y)`` in step s, ``rd()`` in s + RD0 (the two SIGMEM reads, ``SIGMEM[k]`` on
            ``sig_rd`` and ``SIGMEM[k + 1]`` on ``sig_rd2`` for unit 0, ``sig_rd3`` and ``sig_rd4``
            (the second copy of SIGMEM) for unit 1: consecutive words, so always the two banks of
            a copy); the result ``out`` (uQ0.16, 17 bits) is valid in step s + LAT."""
            rdk, rdk1, Dk, Dk1 = (srd, srd2, Sd, Sd2) if c == 0 else (srd3, srd4, Sd3, Sd4)
            SH = shift_unit(f"sg{c}_in", VMEM_BITS, left=False)      # s: rshift(y, F - 16)
            m.d.comb += SH.s.eq(fsh[c])
            S1 = SHIFT_LATENCY
            ay = reg(_abs(SH.r), f"sg{c}_ay", unsigned(VMEM_BITS))   # s + S1 + 1: |y|, sign
            neg = reg(SH.r < 0, f"sg{c}_neg")
            lim = reg((Const(1, 22) << (fb[c] + 10)) - 1, f"sg{c}_lim", 21)   # per instruction
            fmask = reg((Const(1, 11) << fb[c]) - 1, f"sg{c}_fmask", 10)
            a = Signal(21, name=f"sg{c}_a")
            m.d.comb += a.eq(Mux(ay > lim, lim, ay))
            k0 = reg(a >> fb[c], f"sg{c}_k", 11)                     # s + S1 + 2: index, fraction
            k1 = reg((a >> fb[c]) + 1, f"sg{c}_k1", 11)
            fr = reg(a & fmask, f"sg{c}_fr", 10)
            RD0 = S1 + 2
            T = RD0 + RL                                             # SIGMEM[k] in Dk, SIGMEM[k + 1] in Dk1
            t0 = Dk
            MI = mul_unit(f"sg{c}_mi", _SIG_BITS + 1, 11)            # T: (t1 - t0) fr
            MI.set(Cat(Dk1, Const(0, 1)).as_signed() - Cat(t0, Const(0, 1)).as_signed(),
                   dly(fr, T - RD0, f"sg{c}_frd"))
            SI = shift_unit(f"sg{c}_fb", _SIG_BITS + 1 + 11)         # T + lat: rshift(., fb)
            SI.set(MI.p, fb[c])
            at = T + MI.lat + SHIFT_LATENCY                          # step of the shifted product
            d = Signal(signed(21), name=f"sg{c}_d")
            m.d.comb += d.eq(dly(t0, at - T, f"sg{c}_t0d") + SI.r)
            pr = reg(_round_shift_const((1 << 17) + d, 2), f"sg{c}_pr", 18)
            out = reg(Mux(dly(neg, at + 1 - (S1 + 1), f"sg{c}_negd"), (1 << 16) - pr, pr), f"sg{c}_out",
                      unsigned(17))

            def start(y):
                use(f"sg{c}")
                m.d.comb += SH.x.eq(y)
            def rd():
                rdk(k0)
                rdk1(k1)
            return SimpleNamespace(start=start, rd=rd, out=out, RD0=RD0, LAT=at + 2)

        SG0, SG1 = sigmoid_unit(0), sigmoid_unit(1)   # F = R[ra] (VGLU, VREC i); F = R[rb] (VREC f; VGLU: R[ra])
        LS = SG0.LAT
        ML, SL = MUL_LATENCY, SHIFT_LATENCY

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
            return reg(_abs(v), name, unsigned(_PROD_Z))

        # ------------------------------------------------------------ step lists
        # Step k of an element runs in cycle e * II + k. Each unit (multiplier, shifter, sigmoid
        # unit) and memory port is used in steps of distinct residues mod II (checked below). A
        # read issued in step k is in X / Cd / Sd in step k + RL, a product set in step k is read
        # in step k + ML, a variable shift in step k + SL.
        prog = {}
        prog[Op.VSET] = [nop, nop, lambda: vwrite(imm)]
        prog[Op.VEMB] = sched(RL + SL + 3, {
            0: lambda: crd(rA + j),
            RL: lambda: SZ.set(Cd, -shz),
            RL + SL + 2: lambda: vwrite(SZ.r),
        })

        x1 = Signal(signed(VMEM_BITS), reset_less=True)

        def vadd_x1():
            m.d.sync += x1.eq(X)
        vsum = reg(x1 + X, "vsum")      # x1 + x[a2] of step RL + 1, in step RL + 2
        prog[Op.VADD] = sched(RL + 5, {
            0: lambda: vrd(a1 + j),
            1: lambda: vrd(a2 + j),
            RL: vadd_x1,
            RL + 4: lambda: vwrite(vsum),
        })
        ax = reg(_abs(X), "ax")         # |x| of step RL, in step RL + 1
        prog[Op.VMAXABS] = sched(RL + 2, {0: lambda: vrd(a1 + j), RL + 1: lambda: track_abs(mx, ax)})

        # VARGMAX, four elements per step (group 4j .. 4j + 3, one word of each VMEM bank): the
        # first index of the largest value (ties keep the lower index). The better of each pair in
        # RL (registered), of the two pairs in RL + 1, the running maximum in RL + 2. Elements past
        # n never win (element 4j is always valid).
        jr = jp[RL]
        ok = [None] + [Cat(Const(k, 2), jr) < n for k in (1, 2, 3)]            # 4j + k < n
        b01 = ok[1] & (X2 > X)
        b23 = ok[3] & (X4 > X3)
        p01 = reg(Mux(b01, X2, X), "am01", signed(VMEM_BITS))
        i01 = reg(b01, "am01i")
        p23 = reg(Mux(b23, X4, X3), "am23", signed(VMEM_BITS))
        i23 = reg(Cat(b23, Const(1, 1)), "am23i")
        v23 = reg(ok[2], "am23v")
        bq = v23 & (p23 > p01)
        qv = reg(Mux(bq, p23, p01), "amq", signed(VMEM_BITS))
        qi = reg(Mux(bq, i23, i01), "amqi", unsigned(2))

        def argmax4():
            with m.If((j == 0) | (qv > best)):
                m.d.sync += [best.eq(qv), arg.eq(Cat(qi, j))]
        prog[Op.VARGMAX] = sched(RL + 3, {0: lambda: (vrd(a1 + 4 * j), vrd2(a1 + 4 * j + 1), vrd3(a1 + 4 * j + 2),
                                                       vrd4(a1 + 4 * j + 3)),
                                          RL + 2: argmax4})

        # VNQA / VUMAX2, II = 2: x in step 0; z' = rshift(x, R[rb]) set in RL, valid in Z = RL + SL;
        # C[a2] read in Z - RL, C[a0] in Z + 1 - RL (distinct mod 2).
        Z = RL + SL

        def sq_acc():
            m.d.sync += acc.eq(acc + MW.p)

        assert SL == RL     # the C[a2] read for z' goes out with the shift of x: zstart
        def zstart():
            SZ.set(X, shz)
            crd(a2 + j)
        prog[Op.VNQA] = sched(Z + 2 * ML + 2, {
            0: lambda: vrd(a1 + j),
            RL: zstart,                                        # Z - RL == SL == RL: same step
            Z + 1 - RL: lambda: crd(a0 + j),
            Z: lambda: MZ1.set(SZ.r, Cd),
            Z + 1: lambda: MZ2.set(dly(SZ.r, 1, "zrd"), Cd),
            Z + ML + 1: lambda: MW.set(c17, c17),              # c17 = rshift(MZ1.p, 17)
            Z + ML + 2: lambda: track_abs(mx_c, absreg(MZ2.p, "amz2n")),
            Z + 2 * ML + 1: sq_acc,
        })
        prog[Op.VUMAX2] = sched(Z + ML + 3, {
            0: lambda: vrd(a1 + j),
            RL: zstart,
            Z + 1 - RL: lambda: crd(a0 + j),
            Z: lambda: MZ1.set(SZ.r, Cd),
            Z + 1: lambda: MZ2.set(dly(SZ.r, 1, "zru"), Cd),
            Z + ML + 1: lambda: track_abs(mx, absreg(MZ1.p, "amz1u")),
            Z + ML + 2: lambda: track_abs(mx_c, absreg(MZ2.p, "amz2u")),
        })

        code = reg(_clamp(c25, -127, 127), "code", signed(8))   # c25 of MW.p, clamped

        # The four-lane paths of VNQA and VUMAX2 (II = 1 per group of elements 4j .. 4j + 3): x on the
        # four VMEM ports (four banks), C[a2 + 4j + k] and C[a0 + 4j + k] on the eight CMEM ports
        # (eight banks, as a0 - a2 = 4 modulo 8); lane k is SZs[k], MZ1s[k], MZ2s[k], MWs[k]. Past the
        # end (n not a multiple of 4) a lane's z' is zeroed, so its products add 0 to the sum of
        # squares and leave the maxima.
        Xs, Cs = [X, X2, X3, X4], [Cd, Cd2, Cd3, Cd4, Cd5, Cd6, Cd7, Cd8]
        vrds = [vrd, vrd2, vrd3, vrd4]
        SZs = [SZ] + [shift_unit(f"sz{x}", VMEM_BITS, MUL_A) for x in "bcd"]
        MZ1s = [MZ1] + [mul_unit(f"mz1{x}", MUL_A, _CMEM_BITS, MUL_LATENCY) for x in "bcd"]
        MZ2s = [MZ2] + [mul_unit(f"mz2{x}", MUL_A, _CMEM_BITS, MUL_LATENCY) for x in "bcd"]
        MWs = [MW] + [mul_unit(f"mw{x}", MUL_A, MUL_B, MUL_LATENCY) for x in "bcd"]
        SZb, SZc, SZd = SZs[1:]
        MZ1b, MZ2b = MZ1s[1], MZ2s[1]
        MWb, MWc, MWd = MWs[1:]
        c17s = [c17] + [cshift(M_.p, 17, f"c17{x}") for M_, x in zip(MZ1s[1:], "bcd")]
        AW = _PROD_Z

        def max4(ps, name):
            """max |p| over the four lanes' products valid in step k, in step k + 3 (|.|, then a
            tree of two registered compares)."""
            a = [absreg(p_, f"{name}a{i}") for i, p_ in enumerate(ps)]
            b = [reg(Mux(a[i] > a[i + 1], a[i], a[i + 1]), f"{name}b{i}", unsigned(AW)) for i in (0, 2)]
            return reg(Mux(b[0] > b[1], b[0], b[1]), name, unsigned(AW))
        mx4_z1, mx4_z2 = max4([M_.p for M_ in MZ1s], "mx4z1"), max4([M_.p for M_ in MZ2s], "mx4z2")
        # the four lanes' squares, two steps later, modulo 2**64 like the sum ``acc``
        sq_ab = reg(MW.p + MWb.p, "sqab", signed(64))
        sq_cd = reg(MWc.p + MWd.p, "sqcd", signed(64))
        sq4 = reg(sq_ab + sq_cd, "sq4", signed(64))

        def wide_z():
            for k in range(4):
                SZs[k].set(Xs[k], shz)
                crds[k](a2 + 4 * j + k)
                crds[4 + k](a0 + 4 * j + k)

        def wide_mul():
            for k in range(4):
                z = SZs[k].r if k == 0 else Mux(Cat(Const(k, 2), j) < n, SZs[k].r, 0)    # 4j + k < n
                MZ1s[k].set(z, Cs[k])
                MZ2s[k].set(z, Cs[4 + k])

        def wide_rd():
            for k in range(4):
                vrds[k](a1 + 4 * j + k)

        def sq4_acc():
            m.d.sync += acc.eq(acc + sq4)
        wide = {}
        wide[Op.VNQA] = sched(Z + 2 * ML + 4, {
            0: wide_rd,
            RL: wide_z,
            Z: wide_mul,
            Z + ML + 1: lambda: [MWs[k].set(c17s[k], c17s[k]) for k in range(4)],
            Z + ML + 3: lambda: track_abs(mx_c, mx4_z2),
            Z + 2 * ML + 3: sq4_acc,
        })
        wide[Op.VUMAX2] = sched(Z + ML + 4, {
            0: wide_rd,
            RL: wide_z,
            Z: wide_mul,
            Z + ML + 3: lambda: (track_abs(mx, mx4_z1), track_abs(mx_c, mx4_z2)),
        })

        # VQ, II = 1, four codes per step (element group 4j .. 4j + 3: consecutive words, so the four
        # banks of VMEM and of CMEM): z' C[a2] (MZ1, MZ1b, MZ2, MZ2b), rshift(., R[rc]) (ST, STb,
        # STc, STd), times R[ra] (MW, MWb, MWc, MWd), rshift 25, clamp; the four codes into adjacent
        # byte lanes (those past n not written).
        STb, STc, STd = (shift_unit(f"st{x}", _PROD_Z, MUL_A) for x in "bcd")
        VQL = [(SZ, MZ1, ST, MW), (SZb, MZ1b, STb, MWb), (SZc, MZ2, STc, MWc), (SZd, MZ2b, STd, MWd)]
        codes = [code] + [reg(_clamp(cshift(L[3].p, 25, f"c25{x}"), -127, 127), f"code{x}", signed(8))
                          for L, x in zip(VQL[1:], "bcd")]

        def vq_write():
            use("a_wr")
            en = Cat(Const(1, 1), *[Cat(Const(k, 2), j) < n for k in (1, 2, 3)])    # 4j + k < n
            m.d.comb += [self.a_wr.addr.eq(Mux(a0[0], chunks_max, 0) + jw),
                         self.a_wr.data.eq(Cat(*(codes * (lanes // 4)))),
                         self.a_wr.en.eq(en << jl)]
            with m.If(jl == lanes - 4):
                m.d.sync += [jl.eq(0), jw.eq(jw + 1)]
            with m.Else():
                m.d.sync += jl.eq(jl + 4)

        def each(f):
            return lambda: [f(k, *L) for k, L in enumerate(VQL)]
        wide[Op.VQ] = sched(Z + 2 * ML + SL + 3, {
            0: each(lambda k, *_: vrds[k](a1 + 4 * j + k)),
            RL: each(lambda k, sz, *_: (sz.set(Xs[k], shz), crds[k](a2 + 4 * j + k))),
            Z: each(lambda k, sz, mz, *_: mz.set(sz.r, Cs[k])),
            Z + ML: each(lambda k, sz, mz, st, *_: st.set(mz.p, shc)),
            Z + ML + SL: each(lambda k, sz, mz, st, mw: mw.set(st.r, rA)),
            Z + 2 * ML + SL + 2: vq_write,                     # c25 then the clamped codes
        })

        # VQ's one-lane path (C[a2] not at 0 modulo 4, so not in the banks of the lanes' ports):
        # II = 1, one code per step on lane 0 (C on port 1, which reads any bank).
        def vq_write1():
            use("a_wr")
            m.d.comb += [self.a_wr.addr.eq(Mux(a0[0], chunks_max, 0) + jw),
                         self.a_wr.data.eq(Cat(*([code] * lanes))),
                         self.a_wr.en.eq(Const(1, lanes) << jl)]
            with m.If(jl == lanes - 1):
                m.d.sync += [jl.eq(0), jw.eq(jw + 1)]
            with m.Else():
                m.d.sync += jl.eq(jl + 1)
        prog[Op.VQ] = sched(Z + 2 * ML + SL + 3, {
            0: lambda: vrd(a1 + j),
            RL: lambda: (SZ.set(X, shz), crd(a2 + j)),
            Z: lambda: MZ1.set(SZ.r, Cd),
            Z + ML: lambda: ST.set(MZ1.p, shc),
            Z + ML + SL: lambda: MW.set(ST.r, rA),
            Z + 2 * ML + SL + 2: vq_write1,
        })

        # VGLU, II = 2: y in step 0; sigmoid(y) (SG0) and rshift(y, R[rb]) (SZ) from step RL;
        # x[a2] read in an odd step so that it arrives with sy = rshift(.. sigmoid, 16).
        g = RL + LS                                             # sigmoid(y) valid
        gx = g + ML + 1                                         # sy valid (c16z1)
        gx += (gx - RL) % 2 == 0
        prog[Op.VGLU] = sched(gx + ML + 3, {
            0: lambda: vrd(a1 + j),
            RL: lambda: (SG0.start(X), SZ.set(X, shz)),
            RL + SG0.RD0: SG0.rd,
            g: lambda: MZ1.set(dly(SZ.r, g - RL - SL, "ya"), SG0.out),
            gx - RL: lambda: vrd(a2 + j),
            gx: lambda gx=gx: MW.set(dly(c16z1, gx - (g + ML + 1), "syd"), X),   # (gx of this path)
            gx + ML + 2: lambda: vwrite(MW.p),
        })

        # VGLU two-lane path (a pair per cycle; x[a1 + 2j], x[a1 + 2j + 1] on VMEM ports 1, 2 and
        # x[a2 + 2j], x[a2 + 2j + 1] of the pair D steps behind on ports 3, 4: four banks when
        # a2 - a1 = 2 modulo 4 and D is even); lane b: SZb, SG1 (F = R[ra]), MZ1b, MWb.
        c16z1b = cshift(MZ1b.p, 16, "c16z1b")
        gx = g + ML + 1
        gx += (gx - RL) % 2
        glu_write, glu_track = vwrite2(MW.p, MWb.p, gx + ML + 2)
        wide[Op.VGLU] = sched(gx + ML + 4, {
            0: lambda: (vrd(a1 + 2 * j), vrd2(a1 + 2 * j + 1)),
            RL: lambda: (SG0.start(X), SG1.start(X2), SZ.set(X, shz), SZb.set(X2, shz)),
            RL + SG0.RD0: lambda: (SG0.rd(), SG1.rd()),
            g: lambda: (MZ1.set(dly(SZ.r, g - RL - SL, "ywa"), SG0.out),
                        MZ1b.set(dly(SZb.r, g - RL - SL, "ywb"), SG1.out)),
            gx - RL: lambda: (vrd3(a2 + 2 * j), vrd4(a2 + 2 * j + 1)),
            gx: lambda: (MW.set(dly(c16z1, gx - (g + ML + 1), "sywa"), X3),
                         MWb.set(dly(c16z1b, gx - (g + ML + 1), "sywb"), X4)),
            gx + ML + 2: glu_write,
            gx + ML + 3: glu_track,
        })
        assert SG1.LAT == SG0.LAT and SG1.RD0 == SG0.RD0

        # VREC, II = 4: f read in step 0, i in 2, s in a step of residue 1 or 3; SIGMEM (both
        # ports) for f in RL + RD0, for i two steps later; CMEM (1 - lb) once.
        sv = Signal(signed(max(VMEM_BITS, len(c16w)) + 1), name="snew", reset_less=True)

        def rec_sum():                                          # s + rshift(om (target - s), 16)
            m.d.sync += sv.eq(dly(X, ML + 1, "sv") + c16w)
        gf, gi = RL + LS, RL + 2 + LS                           # sigmoid(f), sigmoid(i) valid
        tg = gi + ML + SL                                       # target = rshift(i sigmoid(i), R[rc])
        ts = tg
        while (ts - RL) % 4 in (0, 2):
            ts += 1                                             # s arrives (its read is in step ts - RL)
        at = _Steps({
            0: lambda: vrd(a2 + j),                             # f
            2: lambda: vrd(a1 + j),                             # i
            RL: lambda: SG1.start(X),
            RL + 2: lambda: SG0.start(X),
            RL + SG1.RD0: SG1.rd,
            RL + 2 + SG0.RD0: SG0.rd,
            gf - RL: lambda: crd(imm + j),                      # 1 - lb
            gf: lambda: MZ2.set((1 << 16) - SG1.out, Cd),       # om = c16z2 in step gf + ML + 1
            gi: lambda gi=gi: MZ1.set(dly(X, gi - RL - 2, "iv"), SG0.out),   # i sigmoid(i)
            gi + ML: lambda: ST.set(MZ1.p, shc),                # target in step tg
            ts: lambda ts=ts, tg=tg, gf=gf: MW.set(dly(ST.r, ts - tg, "tg") - X,
                                                   dly(c16z2, ts - (gf + ML + 1), "om")),   # (this path's steps)
            ts + ML + 1: rec_sum,                               # c16w of MW.p
            ts + ML + 4: lambda: vwrite(sv),
        })
        at.add(ts - RL, lambda: vrd(a0 + j))                    # s (may share a step with the target shift)
        prog[Op.VREC] = sched(ts + ML + 5, at)

        # VREC wide (II = 1): f, i in step 0 (ports 1, 2), both sigmoids in RL (SG1: f, SG0: i, on
        # the two SIGMEM copies), s on port 3 in step ts - RL = VREC_S_LAG.
        def rec_sum3():
            m.d.sync += sv.eq(dly(X3, ML + 1, "sv3") + c16w)
        gf = RL + LS
        ts = gf + ML + SL
        assert ts - RL == VREC_S_LAG, (ts - RL, VREC_S_LAG)
        at = _Steps({
            0: lambda: (vrd(a2 + j), vrd2(a1 + j)),
            RL: lambda: (SG1.start(X), SG0.start(X2)),
            RL + SG0.RD0: lambda: (SG1.rd(), SG0.rd()),
            gf - RL: lambda: crd(imm + j),
            gf: lambda: (MZ2.set((1 << 16) - SG1.out, Cd), MZ1.set(dly(X2, gf - RL, "ivw"), SG0.out)),
            gf + ML: lambda: ST.set(MZ1.p, shc),
            ts: lambda: MW.set(ST.r - X3, dly(c16z2, ts - (gf + ML + 1), "omw")),
            ts + ML + 1: rec_sum3,
            ts + ML + 4: lambda: vwrite(sv),
        })
        at.add(ts - RL, lambda: vrd3(a0 + j))
        wide[Op.VREC] = sched(ts + ML + 5, at)
        for o, steps in wide.items():
            assert len(steps) == WIDE_ELEMENT_CYCLES[o], (o, len(steps))

        for o, steps in prog.items():
            assert len(steps) == ELEMENT_CYCLES[o] and 1 <= INTERVAL[o] <= len(steps), \
                (o, len(steps), ELEMENT_CYCLES[o])

        # ------------------------------------------------------------ control
        is_vec = Signal()       # the offered instruction is a vector opcode with n > 0
        with m.Switch(self.cmd.payload.instr[0:6]):
            with m.Case(*[int(o) for o in prog]):
                m.d.comb += is_vec.eq(self.cmd.payload.instr[32:48] != 0)

        def clamp_sh(v):
            return _clamp(v, -127, 127)

        # The steps: step k of the current opcode runs while vp[k] is set, for element jp[k].
        last = Signal()
        wide_on = Signal()      # ... its two-lane path (path() == "wide"), set in SETUP
        variants = {}           # (op, path) -> (steps, interval)

        def build(o, steps, ii, path_):
            nonlocal j
            variants[(o, path_)] = (steps, ii)
            for k, f in enumerate(steps):
                if f is nop:
                    continue
                j = jp[k]
                ctx.update(op=(o, path_), k=k)
                with m.If(vp[k]):
                    f()
            L = len(steps)
            m.d.comb += last.eq(vp[L - 1] & (jp[L - 1] == nm1))

        with m.Switch(op):
            for o, steps in prog.items():
                with m.Case(int(o)):
                    if o in wide:
                        with m.If(wide_on):
                            build(o, wide[o], 1, "wide")
                        with m.Else():
                            build(o, steps, INTERVAL[o], "slow")
                    else:
                        build(o, steps, INTERVAL[o], "slow")
        ctx.clear()
        for ((o, f_), res), ks in uses.items():
            ii = variants[(o, f_)][1]
            res_mod = [k % ii for k in ks]
            assert len(set(res_mod)) == len(res_mod), f"{o.name}: {res} used in steps {ks} (II {ii})"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(accept):
                    m.d.sync += [ir.eq(self.cmd.payload.instr), rA.eq(self.cmd.payload.ra),
                                 rB.eq(self.cmd.payload.rb), rC.eq(self.cmd.payload.rc),
                                 mx.eq(0), mx_c.eq(0), acc.eq(0), best.eq(0), arg.eq(0)]
                    m.d.sync += [v.eq(0) for v in vp[1:]]     # no step of an earlier instruction runs on
                    with m.If(is_vec):
                        m.next = "SETUP"
                    with m.Else():
                        m.next = "DONE"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                c_al = a2[0:2] == 0                     # CMEM_ALIGNED: lanes wired to their banks
                wide4_c = ((op == Op.VNQA) | (op == Op.VUMAX2)) & ((a0 - a2)[0:3] == 4) & c_al  # four lanes
                wideq_c = (op == Op.VQ) & c_al
                wide2_c = (op == Op.VGLU) & ((a2 - a1)[0:2] == 2)                          # two lanes
                a0s = (a0 - VREC_S_LAG)[0:2]
                wide_c = wide4_c | wideq_c | wide2_c | ((op == Op.VREC) & (a1[0] ^ a2[0]) & ((a0s - a1)[0:2] != 0)
                                              & ((a0s - a2)[0:2] != 0))
                groups = Mux((op == Op.VARGMAX) | wide4_c | wideq_c, (n + 3) >> 2,     # loop elements
                             Mux(wide2_c, (n + 1) >> 1, n))
                m.d.sync += [shz.eq(clamp_sh(rB)), shc.eq(clamp_sh(rC)),
                             sat_hi.eq((Const(1, 38) << (sat - 1)[:6]) - 1),
                             sat_lo.eq(-(Const(1, 38) << (sat - 1)[:6])),
                             ph.eq(0), e_new.eq(0), more.eq(1), jl.eq(0), jw.eq(0),
                             ne.eq(groups), nm1.eq(groups - 1),
                             wide_on.eq(wide_c)]
                for k, F in enumerate((rA, Mux(op == Op.VGLU, rA, rB))):
                    m.d.sync += [fsh[k].eq(_clamp(F - 16, 0, 127)), fb[k].eq(_clamp(F, 6, 16) - 6)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), start.eq((ph == 0) & more)]
                ii_last = Signal()      # the last cycle of an element's interval
                with m.Switch(op):
                    for o in prog:
                        with m.Case(int(o)):
                            if o in wide:
                                m.d.comb += ii_last.eq(wide_on | (ph == INTERVAL[o] - 1))
                            else:
                                m.d.comb += ii_last.eq(ph == INTERVAL[o] - 1)
                with m.If(ii_last):
                    m.d.sync += [ph.eq(0), e_new.eq(e_new + 1), more.eq(e_new + 1 < ne)]
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
