"""The compiled program on the instruction-level executor equals the integer reference bit for bit."""

import numpy as np
import pytest

from models.checkpoint import export_checkpoint, load_checkpoint
from models.intref import CALIBRATION_TEXT, IntFormats, IntRefModel, argmax_first
from sw.compiler import ModelTooLarge
from sw.isa import Op, decode_program, encode_program
from sw.isa_sim import Core
from sw.program import MemorySizes, compile_model

from tiny_models import HUGE_TOK, NEG_TOK, SHIPPED, ZERO_TOK, random_model as _random_model

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("program") / "tiny.safetensors"
    export_checkpoint(_random_model(0), path, {"purpose": "test"})
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return IntRefModel(tiny_ckpt)


def _run_both(ir: IntRefModel, core: Core, tokens, probes) -> int:
    """Step both over ``tokens`` (state carried); compare logits, every h, every state, argmax."""
    captured = {}

    def hook(c, pc, ins, cycles):
        if pc in probes:
            captured[probes[pc]] = c.region("h")

    core.hook = hook
    ir.reset(1)
    core.reset()
    for tok in tokens:
        logits, tr = ir.step(int(tok), trace=True)
        captured.clear()
        got, nxt = core.step(int(tok))
        assert np.array_equal(got, logits[0] if logits.ndim == 2 else logits), f"logits differ at token {tok}"
        assert nxt == int(argmax_first(logits.reshape(-1)))
        for n, h in enumerate(tr["h"]):
            assert np.array_equal(captured[f"h{n}"], h[0]), f"h{n} differs at token {tok}"
        for n in range(ir.config.n_layers):
            assert np.array_equal(core.state(n), ir.state[n][0]), f"state {n} differs at token {tok}"
    return core.cycles.total


@pytest.mark.parametrize("lanes,rows,fmt", [(32, 8, "2bit"), (16, 4, "trits5"), (8, 3, "2bit")])
def test_tiny_model_equals_intref(tiny, lanes, rows, fmt):
    cm = compile_model(tiny, lanes, rows, fmt)
    probes = {pc: name for pc, name in cm.probes}
    assert sorted(probes.values()) == [f"h{n}" for n in range(tiny.config.n_layers + 1)]
    rng = np.random.default_rng(lanes)
    seqs = [
        rng.integers(0, 256, 16),
        [ZERO_TOK, ZERO_TOK, 0, ZERO_TOK, 255, HUGE_TOK, HUGE_TOK, NEG_TOK, ZERO_TOK, 1],
        [NEG_TOK] * 6 + [255] * 6,
    ]
    if lanes != 32:  # other engine shapes: a shorter run (intref's steps dominate the test time)
        seqs = [seqs[0][:8], seqs[1]]
    core = Core(cm, width=4)
    for seq in seqs:
        _run_both(tiny, core, seq, probes)


def test_rsqrt_placement_keeps_the_results(tiny):
    """Each group's SRSQ goes right after its first VQ by default (the sequencer runs it beside the
    VQ) or right after VNQA (rsqrt_after_vq=False); both programs equal intref."""
    for after in (True, False):
        cm = compile_model(tiny, 16, 8, "trits5", rsqrt_after_vq=after)
        ops = [ins.op for ins in cm.program]
        for k, op in enumerate(ops):
            if op == Op.SRSQ:
                prev = [o for o in ops[:k] if o in (Op.VNQA, Op.VQ)][-1]
                assert prev == (Op.VQ if after else Op.VNQA), (after, k)
        assert ops.count(Op.SRSQ) == 4 * tiny.config.n_layers + 1     # four groups per layer, the head
        _run_both(tiny, Core(cm, width=8), [HUGE_TOK, 3, ZERO_TOK, NEG_TOK], dict(cm.probes))


def test_other_formats_equal_intref(tiny_ckpt):
    """Formats are compiled into the program, not assumed: a different residual, state and logit format."""
    fm = IntFormats(h_frac=18, state_bits=30, logit_frac=14, act_headroom_bits=2)
    ir = IntRefModel(tiny_ckpt, formats=fm, calibration=CALIBRATION_TEXT[:128])
    cm = compile_model(ir, 16, 8)
    _run_both(ir, Core(cm, width=8), [HUGE_TOK, 3, 200, ZERO_TOK, 77, 77, NEG_TOK], dict(cm.probes))


def test_zero_input_and_saturation_are_exercised(tiny):
    """The edge tokens really reach the zero-scale and saturation paths of the reference."""
    tiny.reset(1)
    _, tr = tiny.step(ZERO_TOK, trace=True)
    assert not tr["h"][0].any() and not tr["layers"][0]["i"].any()
    tiny.reset(1)
    _, tr = tiny.step(HUGE_TOK, trace=True)
    assert tr["saturations"].get("emb", 0) > 0


def test_greedy_generation_feeds_back_next_token(tiny):
    cm = compile_model(tiny, 32, 8)
    core = Core(cm, width=8)
    core.reset()
    want = tiny.generate([72, 105], 10)
    tok, got = None, []
    for t in [72, 105]:
        _, tok = core.step(t)
    for _ in range(10):
        got.append(tok)
        _, tok = core.step(tok)
    assert got == want


def test_program_encodes_and_fits_pmem(tiny):
    cm = compile_model(tiny, 32, 8)
    assert decode_program(encode_program(cm.program)) == cm.program
    assert cm.program[-1].op == Op.HALT
    s = cm.summary()
    assert s["pmem_words"] == len(cm.program) + len(cm.reset_program) <= 512   # one 512 x 144 BRAM row
    assert s["wmem_words"] == len(cm.weights.words)
    assert s["gemv_macs_per_token"] == tiny.config.ternary_weights
    assert len(cm.program_image()) == 16 * s["pmem_words"]


def test_compiles_from_constants_and_checks_tokens(tiny):
    a, b = compile_model(tiny, 16, 4), compile_model(tiny.constants(), 16, 4)
    assert a.program == b.program and np.array_equal(a.cmem, b.cmem) and a.weights.words == b.weights.words
    core = Core(a)
    with pytest.raises(ValueError, match="out of range"):
        core.step(256)
    with pytest.raises(TypeError):
        compile_model(3.0, 16, 4)


def test_too_large_model_is_refused(tiny):
    cm = compile_model(tiny, 32, 8)
    s = cm.summary()
    ok = MemorySizes(weight_words=s["wmem_words"], k_max=s["k_max"], vmem_words=s["vmem_words"],
                     cmem_words=s["cmem_words"], tmem_words=s["tmem_words"], prog_words=s["pmem_words"])
    compile_model(tiny, 32, 8, sizes=ok)  # exactly fits
    for field, match in (("weight_words", "weight memory holds"), ("k_max", "at most"),
                         ("vmem_words", "VMEM holds"), ("cmem_words", "CMEM holds"),
                         ("tmem_words", "TMEM holds"), ("prog_words", "PMEM holds")):
        small = MemorySizes(**{**ok.__dict__, field: getattr(ok, field) - 1})
        with pytest.raises(ModelTooLarge, match=match):
            compile_model(tiny, 32, 8, sizes=small)


def test_shipped_model_equals_intref():
    assert SHIPPED.exists(), "the shipped checkpoint is missing"
    # a short calibration keeps the test fast; the formats are parameters of the comparison
    ir = IntRefModel(SHIPPED, calibration=CALIBRATION_TEXT[:64])
    cm = compile_model(ir, 32, 8)
    probes = {pc: name for pc, name in cm.probes}
    cycles = _run_both(ir, Core(cm, width=8), list(b"ROMEO.\n\x00\xff"), probes)
    assert cycles > cm.summary()["wmem_words"]


def test_paired_streams_lie_in_different_banks(tiny):
    """Every VNQA and VUMAX2 reads its two CMEM streams four words apart modulo 8 (CMEM is eight
    banks), starting at 0 modulo 4 like every VQ's (the lanes' CMEM ports reach two banks each), and every VGLU its two VMEM streams two apart modulo 4 (VMEM is four banks), so the
    core runs them on its wide paths (hw/core/vector_unit.py: path), a pair of elements per cycle; every VREC reads
    its three VMEM streams i, f and the state from three different banks (its wide path). The pad words that arrange it do not change the results (the other tests of
    this file run the same programs)."""
    from hw.core.vector_unit import path
    for model in (tiny, str(SHIPPED)):
        cm = compile_model(model, 32, 8, "trits5")
        want = {Op.VNQA: "wide", Op.VUMAX2: "wide", Op.VQ: "wide", Op.VGLU: "wide", Op.VREC: "wide"}
        paired = [i for i in cm.program if i.op in want]
        assert {i.op for i in paired} == set(want)
        slow = [str(i) for i in paired if path(i.op, i.a0, i.a1, i.a2) != want[i.op]]
        assert not slow, slow
