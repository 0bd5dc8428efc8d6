"""Instruction set of the accelerator core (GEMV engine + vector unit + sequencer).

The core runs a straight-line program once per token. The host compiler (:mod:`sw.program`)
generates it from a model's constants and memory layout; nothing about the model's shape is in
the gateware: every length, address, format and table base is an instruction field or a scalar
register. ``docs/isa.md`` is the full description (datapath, memory map, cycle model); this
module is the single definition of the opcodes, the fields and the binary encoding.

Encoding: one 128-bit word per instruction (little-endian bit numbering)::

    bits   0..5    op     opcode (:class:`Op`)
    bits   6..11   sat    output saturation width (0 = none; the 36-bit vector word is checked)
    bits  12..16   rd     scalar destination (also: reduction result, running max|written|)
    bits  17..21   ra     scalar source A
    bits  22..26   rb     scalar source B
    bits  27..31   rc     scalar source C / second scalar destination
    bits  32..47   n      vector length (elements)
    bits  48..67   a0     address: vector destination / third operand
    bits  68..87   a1     address: first vector source
    bits  88..107  a2     address: second vector source
    bits 108..127  imm    20-bit signed immediate

Memories (word widths; sizes are build parameters, reported by the compiler):

* ``VMEM``  vector memory, 36-bit signed words (residual, state, temporaries, GEMV outputs).
* ``CMEM``  constant memory, 18-bit signed words (norm-weight mantissas, ``1 - lb``, embedding
  mantissas and shifts); read-only while a token runs.
* ``TMEM``  scalar-unit tables, 18-bit unsigned (reciprocal and rsqrt seeds).
* ``SIGMEM`` the sigmoid table (1025 x 18-bit unsigned), one copy per vector lane.
* ``WMEM``, ``AMEM`` the GEMV engine's weight memory and its two int8 activation banks.
* ``PMEM``  program memory, 128-bit words.

Scalar registers: 32 x 54-bit signed, ``r0`` reads as 0. By convention the sequencer writes
the input token into ``r1`` before a run, and the program leaves the next token in ``r2``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import NamedTuple

__all__ = ["Op", "Instr", "FIELDS", "INSTR_BITS", "encode", "decode", "encode_program",
           "decode_program", "program_bytes", "VECTOR_OPS", "SCALAR_OPS", "N_REGS", "REG_BITS",
           "VMEM_BITS", "CMEM_BITS", "TMEM_BITS", "REG_TOKEN", "REG_NEXT", "gemv_imm",
           "gemv_fields", "GemvImm", "disassemble"]

INSTR_BITS = 128
N_REGS = 32
REG_BITS = 54
VMEM_BITS = 36
CMEM_BITS = 18
TMEM_BITS = 18
REG_TOKEN = 1
REG_NEXT = 2


class Op(enum.IntEnum):
    """Opcodes. Semantics per element ``j < n`` (``x[a]`` = VMEM word, ``C[a]`` = CMEM word,
    ``R[r]`` = scalar register); see ``docs/isa.md`` for every one."""

    NOP = 0
    HALT = 1      # end of the token's program
    SYNC = 2      # wait until at most imm GEMVs are outstanding (their outputs not all written)
    # ---- scalar unit (one result per instruction)
    SLI = 8       # R[rd] = imm
    SADD = 9      # R[rd] = R[ra] + R[rb] + imm
    SSUB = 10     # R[rd] = R[ra] - R[rb] + imm
    SMAXI = 11    # R[rd] = max(R[ra], imm)
    SMUL = 12     # R[rd] = R[ra] * R[rb]            (18 x 18 multiplier)
    SMULI = 13    # R[rd] = R[ra] * imm              (18 x 18 multiplier)
    SRSHI = 14    # R[rd] = round_shift(R[ra], imm)
    SRSHR = 15    # R[rd] = round_shift(R[ra], R[rb])
    SBLEN = 16    # R[rd] = bit_length(R[ra]) + imm  (leading-zero counter)
    SNORM = 17    # R[rd], R[rc] = normalize_mant17(R[ra])
    SMANT16 = 18  # R[rc] = t = bit_length(R[ra]) - 16; R[rd] = R[ra] >> t (2**15 if R[ra] == 0)
    SRECIP = 19   # R[rd] = recip_norm(R[ra]) with the seed table at TMEM[imm]
    SRSQ = 20     # R[rd], R[rc] = q, k of rsqrt_sum_squares(R[ra]); seed table at TMEM[imm]
    SZSEL = 21    # R[rd] = 0 if R[ra] == 0 or R[rb] == 0 else R[rc]
    SLDC = 22     # R[rd] = C[R[ra] + imm]
    # ---- vector unit (streams n elements, W per cycle)
    VSET = 32     # x[a0 + j] = imm
    VEMB = 33     # x[a0 + j] = sat(C[R[ra] + j] << R[rb]);            R[rd] = max|written|
    VADD = 34     # x[a0 + j] = sat(x[a1 + j] + x[a2 + j]);            R[rd] = max|written|
    VMAXABS = 35  # R[rd] = max_j |x[a1 + j]|
    VNQA = 36     # z' = round_shift(x[a1+j], R[rb]); R[rd] = sum round_shift(z' C[a2+j], 17)**2;
                  # R[rc] = max |z' C[a0+j]|                            (NQL pass A)
    VUMAX2 = 37   # z' as VNQA; R[rd] = max|z' C[a2+j]|; R[rc] = max|z' C[a0+j]| (if rc != 0)
    VQ = 38       # AMEM[bank a0][j] = clamp(round_shift(round_shift(z' C[a2+j], R[rc]) R[ra], 25), +-127)
    VREC = 39     # recurrence, state x[a0] in place; inputs x[a1] (i), x[a2] (f), C[imm] (1 - lb)
    VGLU = 40     # x[a0+j] = sat(round_shift(round_shift(y, R[rb]) sigmoid(y; R[ra]), 16) x[a2+j]),
                  # y = x[a1+j];                                        R[rd] = max|written|
                  # imm bit 0 (chain): x[a2] is the destination of the newest GEMV, read as written
    VARGMAX = 41  # R[rd] = lowest j with x[a1 + j] maximal
    GEMV = 48     # engine: x[a0 + m] = sat(round_shift(acc_m R[ra], R[rb])), m < n
                  # (raw mode: acc_m; residual mode: sat(x[a0 + m] + sat(...)))


SCALAR_OPS = frozenset(o for o in Op if 8 <= o < 32)
VECTOR_OPS = frozenset(o for o in Op if 32 <= o < 48)

#: (name, lsb, width, signed)
FIELDS = (
    ("op", 0, 6, False),
    ("sat", 6, 6, False),
    ("rd", 12, 5, False),
    ("ra", 17, 5, False),
    ("rb", 22, 5, False),
    ("rc", 27, 5, False),
    ("n", 32, 16, False),
    ("a0", 48, 20, False),
    ("a1", 68, 20, False),
    ("a2", 88, 20, False),
    ("imm", 108, 20, True),
)
_FIELD = {f[0]: f[1:] for f in FIELDS}

# GEMV immediate: chunks in bits 0..14, activation bank in bit 15, raw-accumulator mode in bit 16,
# residual-accumulate mode in bit 17, chained codes in bit 18 (bit 19, the sign, is 0).
_GEMV_CHUNK_BITS = 15


class GemvImm(NamedTuple):
    """The fields packed into a GEMV instruction's ``imm``."""

    chunks: int
    bank: int
    raw: bool
    residual: bool
    chain: bool


def gemv_imm(chunks: int, bank: int, raw: bool = False, residual: bool = False, chain: bool = False) -> int:
    """The ``imm`` field of a GEMV instruction.

    ``raw``: write the accumulators unscaled (no rescale registers read). ``residual``: add the
    rescaled, saturated outputs to the destination in place (read-modify-write), saturating again.
    ``chain``: start while the newest vector instruction (a ``VQ`` into the same bank) is still
    writing the codes; the engine reads chunk ``c`` only once it is written.
    """
    if raw and residual:
        raise ValueError("a GEMV is either raw or residual, not both")
    if not 1 <= chunks < (1 << _GEMV_CHUNK_BITS):
        raise ValueError(f"GEMV chunks must be in 1..{(1 << _GEMV_CHUNK_BITS) - 1}, not {chunks}")
    if bank not in (0, 1):
        raise ValueError(f"activation bank must be 0 or 1, not {bank}")
    return chunks | bank << 15 | int(bool(raw)) << 16 | int(bool(residual)) << 17 | int(bool(chain)) << 18


def gemv_fields(imm: int) -> GemvImm:
    """The :class:`GemvImm` fields of a GEMV instruction's ``imm``."""
    return GemvImm(imm & 0x7FFF, (imm >> 15) & 1, bool((imm >> 16) & 1), bool((imm >> 17) & 1),
                   bool((imm >> 18) & 1))


@dataclass(frozen=True)
class Instr:
    """One instruction; fields not used by the opcode are 0."""

    op: Op
    sat: int = 0
    rd: int = 0
    ra: int = 0
    rb: int = 0
    rc: int = 0
    n: int = 0
    a0: int = 0
    a1: int = 0
    a2: int = 0
    imm: int = 0
    comment: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", Op(self.op))
        for name, (lsb, width, signed) in _FIELD.items():
            if name == "op":
                continue
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{self.op.name}.{name} must be an int, not {v!r}")
            lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
            if not lo <= v <= hi:
                raise ValueError(f"{self.op.name}.{name} = {v} does not fit {width} "
                                 f"{'signed' if signed else 'unsigned'} bits")
        if self.sat > 36:
            raise ValueError(f"{self.op.name}.sat = {self.sat}: at most 36 (the vector word)")

    def __str__(self) -> str:
        return disassemble(self)


def encode(ins: Instr) -> int:
    """The 128-bit instruction word of ``ins``."""
    w = 0
    for name, lsb, width, _ in FIELDS:
        v = int(getattr(ins, name))
        w |= (v & ((1 << width) - 1)) << lsb
    return w


def decode(word: int) -> Instr:
    """Inverse of :func:`encode` (the comment is lost)."""
    if not 0 <= word < (1 << INSTR_BITS):
        raise ValueError("instruction word out of range")
    kw = {}
    for name, lsb, width, signed in FIELDS:
        v = (word >> lsb) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        kw[name] = v
    try:
        kw["op"] = Op(kw["op"])
    except ValueError:
        raise ValueError(f"unknown opcode {kw['op']}") from None
    return Instr(**kw)


def encode_program(prog) -> list[int]:
    """Instruction words of a program."""
    return [encode(i) for i in prog]


def decode_program(words) -> list[Instr]:
    return [decode(int(w)) for w in words]


def program_bytes(prog) -> bytes:
    """The program memory image: 16 bytes per instruction, little-endian."""
    return b"".join(encode(i).to_bytes(INSTR_BITS // 8, "little") for i in prog)


def disassemble(ins: Instr) -> str:
    """One line of assembly for ``ins`` (only the fields its opcode uses)."""
    o = ins.op
    r = lambda k: f"r{getattr(ins, k)}"  # noqa: E731
    if o in (Op.NOP, Op.HALT):
        s = o.name
    elif o == Op.SYNC:
        s = f"SYNC {ins.imm}"
    elif o == Op.SLI:
        s = f"SLI {r('rd')}, {ins.imm}"
    elif o in (Op.SADD, Op.SSUB):
        s = f"{o.name} {r('rd')}, {r('ra')}, {r('rb')}, {ins.imm}"
    elif o in (Op.SMAXI, Op.SMULI, Op.SRSHI, Op.SBLEN):
        s = f"{o.name} {r('rd')}, {r('ra')}, {ins.imm}"
    elif o in (Op.SMUL, Op.SRSHR):
        s = f"{o.name} {r('rd')}, {r('ra')}, {r('rb')}"
    elif o in (Op.SNORM, Op.SMANT16):
        s = f"{o.name} {r('rd')}, {r('rc')}, {r('ra')}"
    elif o == Op.SRECIP:
        s = f"SRECIP {r('rd')}, {r('ra')}, tab=T[{ins.imm}]"
    elif o == Op.SRSQ:
        s = f"SRSQ {r('rd')}, {r('rc')}, {r('ra')}, tab=T[{ins.imm}]"
    elif o == Op.SZSEL:
        s = f"SZSEL {r('rd')}, {r('ra')}, {r('rb')}, {r('rc')}"
    elif o == Op.SLDC:
        s = f"SLDC {r('rd')}, C[{r('ra')} + {ins.imm}]"
    elif o == Op.GEMV:
        g = gemv_fields(ins.imm)
        s = (f"GEMV x[{ins.a0}:+{ins.n}] {'+=' if g.residual else '<-'} W[{ins.a1}] groups={ins.a2} "
             f"chunks={g.chunks} bank={g.bank}{' chained' if g.chain else ''} "
             + ("raw" if g.raw else f"scale={r('ra')} shift={r('rb')} sat={ins.sat}") + f" max->{r('rd')}")
    elif o == Op.VSET:
        s = f"VSET x[{ins.a0}:+{ins.n}] = {ins.imm}"
    elif o == Op.VEMB:
        s = f"VEMB x[{ins.a0}:+{ins.n}] = C[{r('ra')}:] << {r('rb')} sat={ins.sat} max->{r('rd')}"
    elif o == Op.VADD:
        s = f"VADD x[{ins.a0}:+{ins.n}] = x[{ins.a1}] + x[{ins.a2}] sat={ins.sat} max->{r('rd')}"
    elif o in (Op.VMAXABS, Op.VARGMAX):
        s = f"{o.name} {r('rd')}, x[{ins.a1}:+{ins.n}]"
    elif o == Op.VNQA:
        s = (f"VNQA {r('rd')}, {r('rc')}, z=x[{ins.a1}:+{ins.n}] >> {r('rb')}, wp=C[{ins.a2}], "
             f"wc=C[{ins.a0}]")
    elif o == Op.VUMAX2:
        s = (f"VUMAX2 {r('rd')}, {r('rc')}, z=x[{ins.a1}:+{ins.n}] >> {r('rb')}, wc=C[{ins.a2}], "
             f"C[{ins.a0}]")
    elif o == Op.VQ:
        s = (f"VQ A{ins.a0}[:{ins.n}] = codes(z=x[{ins.a1}] >> {r('rb')}, wc=C[{ins.a2}], t={r('rc')}, "
             f"Rq={r('ra')})")
    elif o == Op.VREC:
        s = (f"VREC s=x[{ins.a0}:+{ins.n}], i=x[{ins.a1}] F{r('ra')}, f=x[{ins.a2}] F{r('rb')}, "
             f"1-lb=C[{ins.imm}], shift {r('rc')} max->{r('rd')}")
    elif o == Op.VGLU:
        s = (f"VGLU x[{ins.a0}:+{ins.n}] = silu_block(x[{ins.a1}] F{r('ra')} >> {r('rb')}) * "
             f"x[{ins.a2}]{' chained' if ins.imm & 1 else ''} sat={ins.sat} max->{r('rd')}")
    else:
        s = (f"{o.name} n={ins.n} a0={ins.a0} a1={ins.a1} a2={ins.a2} rd={r('rd')} ra={r('ra')} "
             f"rb={r('rb')} rc={r('rc')} imm={ins.imm} sat={ins.sat}")
    return s + (f"    ; {ins.comment}" if ins.comment else "")


assert {f.name for f in fields(Instr)} - {"comment"} == set(_FIELD)
