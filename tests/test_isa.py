"""Instruction set: encoding round trip, field checks, and the executor's hardware guards."""

import random
import subprocess
import sys

import numpy as np
import pytest

from sw.compiler import WeightImage, layout_weights
from sw.isa import (FIELDS, INSTR_BITS, Instr, Op, decode, decode_program, encode, encode_program,
                    gemv_fields, gemv_imm, program_bytes)
from sw.isa_sim import Core, HazardError, rshift
from sw.program import CompiledModel


def _random_instr(rng: random.Random) -> Instr:
    kw = {}
    for name, _, width, signed in FIELDS:
        if name == "op":
            continue
        if signed:
            kw[name] = rng.randint(-(1 << (width - 1)), (1 << (width - 1)) - 1)
        else:
            kw[name] = rng.randint(0, (1 << width) - 1)
    kw["sat"] = rng.randint(0, 36)
    return Instr(rng.choice(list(Op)), **kw)


def test_encode_decode_round_trip():
    rng = random.Random(1)
    prog = [_random_instr(rng) for _ in range(500)]
    # extremes of every field
    prog.append(Instr(Op.GEMV, sat=36, rd=31, ra=31, rb=31, rc=31, n=65535, a0=(1 << 20) - 1,
                      a1=(1 << 20) - 1, a2=(1 << 20) - 1, imm=-(1 << 19)))
    prog.append(Instr(Op.SLI, imm=(1 << 19) - 1))
    words = encode_program(prog)
    assert all(0 <= w < (1 << INSTR_BITS) for w in words)
    assert decode_program(words) == prog
    img = program_bytes(prog)
    assert len(img) == 16 * len(prog)
    assert [int.from_bytes(img[16 * i:16 * i + 16], "little") for i in range(len(prog))] == words


def test_encoding_bit_positions():
    # field positions are the documented ones (docs/isa.md): check single fields in isolation
    assert encode(Instr(Op.HALT)) == 1
    assert encode(Instr(Op.NOP, rd=1)) == 1 << 12
    assert encode(Instr(Op.NOP, n=1)) == 1 << 32
    assert encode(Instr(Op.NOP, a0=1)) == 1 << 48
    assert encode(Instr(Op.NOP, a2=1)) == 1 << 88
    assert encode(Instr(Op.NOP, imm=-1)) == ((1 << 20) - 1) << 108
    assert decode(((1 << 20) - 1) << 108).imm == -1


def test_field_range_and_opcode_checks():
    with pytest.raises(ValueError, match="n = 65536"):
        Instr(Op.VADD, n=65536)
    with pytest.raises(ValueError, match="imm"):
        Instr(Op.SLI, imm=1 << 19)
    with pytest.raises(ValueError, match="rd"):
        Instr(Op.SLI, rd=32)
    with pytest.raises(ValueError, match="sat"):
        Instr(Op.VADD, sat=37)
    with pytest.raises(ValueError):
        Instr(99)
    with pytest.raises(ValueError, match="unknown opcode"):
        decode(63)
    with pytest.raises(ValueError):
        gemv_imm(0, 0)
    assert gemv_fields(gemv_imm(37, 1, True)) == (37, 1, True, False, False)
    assert gemv_fields(gemv_imm(32767, 0, residual=True, chain=True)) == (32767, 0, False, True, True)
    assert Instr(Op.GEMV, imm=gemv_imm(32767, 1, raw=True, chain=True)).imm > 0
    with pytest.raises(ValueError, match="raw or residual"):
        gemv_imm(1, 0, raw=True, residual=True)


def test_rshift_rounds_half_away():
    assert [rshift(x, 1) for x in (1, -1, 3, -3, 2)] == [1, -1, 2, -2, 1]
    assert rshift(-6, 2) == -2 and rshift(5, -3) == 40
    assert list(rshift(np.array([1, -1, 5, -5]), 1)) == [1, -1, 3, -3]


def test_rshift_array_and_scalar_agree_at_huge_shifts():
    # 2**(s-1) no longer fits int64 from s = 64 on: the array path must still round like the scalar one
    x = [0, 1, -1, 3 << 51, -(3 << 51), (1 << 62) - 1, 1 << 62, -(1 << 62)]
    for s in (52, 53, 61, 62, 63, 64, 65, 100, 1 << 20):
        assert list(rshift(np.array(x, dtype=np.int64), s)) == [rshift(v, s) for v in x], s


def _toy(prog, vmem=64, lanes=4, rows=2):
    """A compiled model with an identity-like 4 x 4 matrix and a hand-written program."""
    w = np.array([[1, 0, 0, -1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]], np.int8)
    img = layout_weights({"m": w}, lanes, rows)
    return CompiledModel(d_model=4, n_layers=0, vocab_size=4, d_ff=4, lanes=lanes, rows=rows, fmt="2bit",
                         program=prog, reset_program=[Instr(Op.HALT)], weights=img,
                         cmem=np.array([1, 2, 3, 4, 65536, 65536, 65536, 65536]), tmem=np.zeros(640, np.int64),
                         sigmem=np.zeros(1025, np.int64), vmem_words=vmem,
                         vmem_map={"logits": (0, 4), "out": (8, 4)}, cmem_map={}, tmem_map={})


def _codes_then(prog_tail):
    """Codes (1, 2, 3, 4) into bank 0 (VQ with wc = 1, no shifts, Rq = 2**25), then ``prog_tail``."""
    return [Instr(Op.VEMB, a0=0, n=4, ra=0, rb=0),
            Instr(Op.SLI, rd=5, imm=1 << 17), Instr(Op.SMULI, rd=5, ra=5, imm=256), Instr(Op.SLI, rd=6, imm=16),
            Instr(Op.VQ, a0=0, a1=0, a2=4, rb=0, rc=6, ra=5, n=4)] + prog_tail


def test_gemv_raw_and_sync():
    # VQ: u = x * 65536, round_shift(u, 16) * 2**25 >> 25 = x
    prog = _codes_then([
        Instr(Op.GEMV, a0=8, n=4, a1=0, a2=2, imm=gemv_imm(1, 0, raw=True)),
        Instr(Op.SYNC),
        Instr(Op.VARGMAX, rd=2, a1=8, n=4),
        Instr(Op.HALT)])
    core = Core(_toy(prog))
    logits, nxt = core.step(0)
    assert list(core.region("out")) == [1 - 4, 2, 3, 10]   # W @ (1, 2, 3, 4)
    assert nxt == 3
    # cycle model by hand (docs/isa.md sections 6-7, width 16): VEMB issues at 0, runs 0..5
    # (latency 4 + 1 beat); SLI 1 (result at 3), SMULI 3 (result at 8), SLI 4 (result at 6); VQ
    # issues at 8 (the vector unit is free from 5), done 16; GEMV starts at 16, 2 beats -> last
    # beat 19, outputs written at 19 + latency (engine: 2 levels + 1 accumulator + 5, less 1
    # counted from the last beat, + 3 rescale = 10) = 29; SYNC retires it at 29, next issue 30;
    # VARGMAX 30..35; HALT waits for the vector unit (35) and takes 1: 36.
    assert core.cycles.engine_busy == 2
    assert core.cycles.total == 36


def test_hazard_read_before_sync_is_refused():
    prog = _codes_then([
        Instr(Op.GEMV, a0=8, n=4, a1=0, a2=2, imm=gemv_imm(1, 0, raw=True), rd=3),
        Instr(Op.VADD, a0=20, a1=8, a2=0, n=4),   # reads the GEMV's output without SYNC
        Instr(Op.HALT)])
    with pytest.raises(HazardError, match="unsynced GEMV"):
        Core(_toy(prog)).step(0)
    prog = _codes_then([
        Instr(Op.GEMV, a0=8, n=4, a1=0, a2=2, imm=gemv_imm(1, 0, raw=True), rd=3),
        Instr(Op.SADD, rd=4, ra=3),                # reads its max register without SYNC
        Instr(Op.HALT)])
    with pytest.raises(HazardError, match="r3"):
        Core(_toy(prog)).step(0)


def test_vmem_word_and_multiplier_guards():
    big = [Instr(Op.SLI, rd=3, imm=(1 << 19) - 1), Instr(Op.SMULI, rd=3, ra=3, imm=(1 << 17) - 1)]
    with pytest.raises(OverflowError, match="18 x 18"):
        Core(_toy(big + [Instr(Op.HALT)])).step(0)
    # a 36-bit VMEM word overflows when an embedding row is shifted too far
    prog = [Instr(Op.SLI, rd=3, imm=31), Instr(Op.SLI, rd=7, imm=4), Instr(Op.VEMB, a0=0, n=4, ra=7, rb=3),
            Instr(Op.HALT)]
    with pytest.raises(OverflowError, match="36-bit"):
        Core(_toy(prog)).step(0)
    # the same with saturation to 32 bits is fine and saturates
    prog = [Instr(Op.SLI, rd=3, imm=31), Instr(Op.SLI, rd=7, imm=4),
            Instr(Op.VEMB, a0=0, n=4, ra=7, rb=3, sat=32, rd=4), Instr(Op.HALT)]
    core = Core(_toy(prog))
    core.step(0)
    assert list(core.region("logits")) == [2 ** 31 - 1] * 4


def test_sw_imports_numpy_only():
    code = ("import sys, sw.isa, sw.program, sw.isa_sim; "
            "bad = [m for m in ('torch', 'amaranth', 'models.intref') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=__file__.rsplit("/tests/", 1)[0])


def test_weight_image_type():
    assert isinstance(_toy([Instr(Op.HALT)]).weights, WeightImage)


def test_function_units_equal_the_fixedpoint_definitions():
    """Sigmoid, reciprocal and rsqrt units, reading the compiled tables, over their whole input ranges."""
    from models import fixedpoint as fx

    core = Core(_toy([Instr(Op.HALT)]))
    core.sigmem[:] = fx.sigmoid_table()
    core.tmem[:] = np.concatenate([fx.recip_table(), fx.rsqrt_table()])
    y = np.arange(-(1 << 17), 1 << 17)
    for f in (8, 11, 16):
        assert np.array_equal(core.sigmoid_unit(y, f), fx.sigmoid_q16(y, f))
    y32 = np.random.default_rng(0).integers(-(1 << 31), 1 << 31, 100_000)
    assert np.array_equal(core.sigmoid_unit(y32, 26), fx.sigmoid_q16(y32, 26))
    mn = np.arange(1 << 15, 1 << 16)
    assert np.array_equal(core.recip_unit(mn, 0), fx.recip_norm(mn))
    ss = np.concatenate([np.arange(0, 1 << 17), 1 + np.random.default_rng(1).integers(0, 1 << 52, 100_000),
                         [1 << 52, (1 << 53) - 1]])
    q, k = core.rsqrt_unit(ss, 256)
    from models.intref import rsqrt_sum_squares
    q_ref, k_ref, zero = rsqrt_sum_squares(ss)
    assert np.array_equal(k, k_ref) and np.array_equal(q[~zero], q_ref[~zero])


def test_chained_read_only_of_the_newest_gemv_from_its_start():
    def prog(a2):
        return _codes_then([
            Instr(Op.GEMV, a0=8, n=4, a1=0, a2=2, imm=gemv_imm(1, 0, raw=True)),
            Instr(Op.GEMV, a0=16, n=4, a1=0, a2=2, imm=gemv_imm(1, 0, raw=True)),
            Instr(Op.SLI, rd=8, imm=8),
            Instr(Op.VGLU, a0=24, a1=0, a2=a2, ra=8, n=4, imm=1),
            Instr(Op.SYNC), Instr(Op.HALT)])
    core = Core(_toy(prog(16)))
    core.step(0)   # newest GEMV, from the start of its output: allowed
    # silu_block(1..4 with an all-zero sigmoid table, i.e. sigmoid = 1/2) times W @ (1, 2, 3, 4)
    assert list(core.vmem[24:28]) == [rshift(x * 32768, 16) * y for x, y in zip((1, 2, 3, 4), (-3, 2, 3, 10))]
    with pytest.raises(HazardError):
        Core(_toy(prog(8))).step(0)     # the older GEMV's output
    with pytest.raises(HazardError):
        Core(_toy(prog(17))).step(0)    # not from its first element


def test_disassembly_names_every_opcode():
    rng = random.Random(2)
    for op in Op:
        ins = _random_instr(rng)
        text = str(Instr(op, **{k: getattr(ins, k) for k in ("sat", "rd", "ra", "rb", "rc", "n", "a0", "a1", "a2",
                                                            "imm")}, comment="c"))
        assert text.startswith(op.name) and text.endswith("; c")


def test_rshift_huge_shift_amount_rounds_to_zero():
    # A register shift amount can be any 54-bit value; the executor must not build a 2**(s-1).
    from sw.isa_sim import rshift
    assert rshift(2**53 - 1, 1 << 40) == 0 and rshift(-(2**53), 1 << 40) == 0
    assert rshift(3, 2) == 1 and rshift(-2, 2) == -1 and rshift(1, 2) == 0   # 0.75, -0.5, 0.25
