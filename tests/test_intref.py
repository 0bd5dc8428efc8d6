"""Integer reference (intref) against the float frozen model, and its hardware invariants."""

import numpy as np
import pytest
import torch

from models.checkpoint import export_checkpoint, load_checkpoint
from models.config import ModelConfig
from models.fixedpoint import to_float
from models.intref import IntFormats, IntRefModel, argmax_first
from models.mmfree import MMFreeLM
from models.quant import act_quant_int8

D, L, B, T = 32, 2, 4, 12

# Documented bounds (docs/arithmetic.md, "tiny random model"): relative L2 error of the residual
# stream per layer, mean over tokens / worst token, and of the layer state.
H_REL_MEAN = [1e-4, 2e-2, 4e-2]
H_REL_MAX = [1e-4, 4e-2, 6e-2]
S_REL_MEAN = [1e-3, 4e-2]


def _random_model(seed: int, quantize: bool = True) -> MMFreeLM:
    torch.manual_seed(seed)
    m = MMFreeLM(ModelConfig(d_model=D, n_layers=L, quantize=quantize))
    with torch.no_grad():  # exercise non-trivial norm weights and forget-gate lower bounds
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.mul_(1 + 0.3 * torch.randn_like(p))
        m.model.lower_bounds.normal_()
    return m


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("intref") / "tiny.safetensors"
    export_checkpoint(_random_model(0), path, {"purpose": "test"})
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def fracs(ckpt):
    """Calibrate once (the built-in text, batched); other models reuse the formats."""
    ir = IntRefModel(ckpt)
    fm = ir.formats
    for name, frac in ir.act_fracs().items():
        mx = ir.calibration_max[name]
        assert fm.act_frac_min <= frac <= fm.act_frac_max
        if fm.act_frac_min < frac < fm.act_frac_max:   # range covers 2**headroom x the maximum
            assert 2.0 ** (fm.act_bits - 1 - frac) >= mx * 2 ** fm.act_headroom_bits
            assert 2.0 ** (fm.act_bits - 2 - frac) < mx * 2 ** fm.act_headroom_bits
    return ir.act_fracs()


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 256, size=(T, B))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_layer_by_layer_against_float_model(ckpt, tokens, fracs):
    ir = IntRefModel(ckpt, act_fracs=fracs)
    fm = MMFreeLM.from_checkpoint(ckpt)
    ir.reset(B)
    state = fm.init_state(B)
    h_err, s_err, agree = [], [], []
    for tok in tokens:
        logits, tr = ir.step(tok, trace=True)
        with torch.no_grad():
            flog, state, hidden = fm.step(torch.from_numpy(tok), state, return_hidden=True)
        h_err.append([_rel(ir.to_float(hi, "h"), hf.double().numpy()) for hi, hf in zip(tr["h"], hidden)])
        s_err.append([_rel(ir.to_float(lay["s"], "s", n), sf.double().numpy())
                      for n, (lay, sf) in enumerate(zip(tr["layers"], state))])
        agree.append(np.mean(argmax_first(logits) == flog.argmax(-1).numpy()))
        assert not any(tr["saturations"].values()), tr["saturations"]
    h_err, s_err = np.array(h_err), np.array(s_err)
    assert np.all(h_err.mean(0) <= H_REL_MEAN), h_err.mean(0)
    assert np.all(h_err.max(0) <= H_REL_MAX), h_err.max(0)
    assert np.all(s_err.mean(0) <= S_REL_MEAN), s_err.mean(0)
    assert np.mean(agree) >= 0.85


def test_bitlinear_codes_and_scale_against_float(ckpt, fracs):
    """One normalise-quantise-linear block against the float RMSNorm + RMSNorm + BitLinear.

    Inputs span 2**-12 .. 2**10 in magnitude (block normalisation) with the residual format.
    """
    ir = IntRefModel(ckpt, act_fracs=fracs)
    fm = MMFreeLM.from_checkpoint(ckpt).double()
    lay, flay = ir.layers[0], fm.model.layers[0]
    rng = np.random.default_rng(5)
    scales = 2.0 ** rng.integers(-12, 11, size=64)
    z = rng.standard_normal((64, D)) * scales[:, None]
    zi = np.round(z * 2 ** ir.formats.h_frac).astype(np.int64)
    ir._sats = {}
    tr = {}
    yi, yf, yg = ir._nql(zi, lay["attn_in"], [lay["i"], lay["f"], lay["g"]], tr, "attn")
    with torch.no_grad():
        x = flay.attn_norm(torch.tensor(to_float(zi, ir.formats.h_frac)))
        for name, y, mod in (("i", yi, flay.attn.i_proj), ("f", yf, flay.attn.f_proj), ("g", yg, flay.attn.g_proj)):
            xq, _ = act_quant_int8(mod.norm(x))
            codes = tr[f"attn.{name}_proj.x_q"]
            assert np.abs(codes - xq.numpy()).max() <= 1
            assert np.mean(codes == xq.numpy()) >= 0.995
            assert np.all(np.abs(codes).max(axis=1) == 127)
            yfl = mod(x).numpy()
            same = np.all(codes == xq.numpy(), axis=1)
            err = np.abs(ir.to_float(y, lay[name].out_frac) - yfl)[same]
            # scale chain (rsqrt, reciprocal, mant17 products) + output rounding
            assert np.all(err <= 2e-4 * np.abs(yfl[same]) + 2.0 ** -(lay[name].out_frac + 1) + 1e-9)


def test_determinism_and_batch_independence(ckpt, tokens, fracs):
    a, b, single = IntRefModel(ckpt, act_fracs=fracs), IntRefModel(ckpt, act_fracs=fracs), IntRefModel(ckpt, act_fracs=fracs)
    a.reset(B)
    b.reset(B)
    single.reset(1)
    for tok in tokens:
        la, ta = a.step(tok, trace=True)
        lb, tb = b.step(tok, trace=True)
        np.testing.assert_array_equal(la, lb)
        for ha, hb in zip(ta["h"], tb["h"]):
            np.testing.assert_array_equal(ha, hb)
        for xa, xb in zip(ta["layers"], tb["layers"]):
            for k in xa:
                if k != "frac":
                    np.testing.assert_array_equal(xa[k], xb[k])
        ls = single.step(int(tok[2]))
        assert ls.ndim == 1 and ls.dtype == np.int64
        np.testing.assert_array_equal(ls, la[2])   # a batch row equals the same sequence alone
    assert a.generate([72, 105], 8) == b.generate([72, 105], 8)


def test_int8_codes_never_minus_128_and_widths(ckpt, tokens, fracs):
    ir = IntRefModel(ckpt, act_fracs=fracs)
    fm = ir.formats
    ir.reset(B)
    for tok in tokens:
        _, tr = ir.step(tok, trace=True)
        for where in [tr] + tr["layers"]:
            for k, v in where.items():
                if k.endswith(".x_q"):
                    assert v.min() >= -127 and v.max() <= 127
                if k.endswith(".acc"):
                    assert np.abs(v).max() <= 127 * ir.config.d_ff
        for lay in tr["layers"]:
            assert lay["om"].min() >= 0 and lay["om"].max() <= 1 << 16
            assert np.abs(lay["s"]).max() < 1 << (fm.state_bits - 1)
            for k in ("i", "f", "g", "gate", "up"):
                assert np.abs(lay[k]).max() < 1 << (fm.act_bits - 1)
            assert np.abs(lay["silu_s"]).max() <= 1 << 16 and np.abs(lay["silu_gate"]).max() <= 1 << 16


def test_argmax_tie_rule():
    assert int(argmax_first(np.array([1, 5, 5, 3]))) == 1
    assert int(argmax_first(np.array([-7, -7, -7]))) == 0
    np.testing.assert_array_equal(argmax_first(np.array([[0, 2, 2], [9, 1, 9]])), [1, 0])


def test_generate_uses_first_argmax(ckpt, fracs):
    ir = IntRefModel(ckpt, act_fracs=fracs)
    out = ir.generate([10, 20, 30], 5)
    ir.reset(1)
    for t in [10, 20, 30]:
        logits = ir.step(t)
    expect = []
    for _ in range(5):
        nxt = int(np.flatnonzero(logits == logits.max())[0])
        expect.append(nxt)
        logits = ir.step(nxt)
    assert out == expect


def test_constants_formats(ckpt, fracs):
    ir = IntRefModel(ckpt, act_fracs=fracs)
    c = ir.constants()
    assert c["table.sigmoid"].shape == (1025,) and c["table.recip"].shape == (256,) and c["table.rsqrt"].shape == (384,)
    assert c["emb.mant"].dtype == np.int16 and np.abs(c["emb.mant"].astype(np.int64)).max() <= 32767
    for n in range(L):
        om = c[f"model.layers.{n}.om_lb"]
        assert om.min() >= 0 and om.max() <= 1 << 16
    assert np.all(c["model.layers.0.om_lb"] == 1 << 16)          # lb[0] = 0 exactly
    lins = [k[: -len(".scale_mant")] for k in c if k.endswith(".scale_mant")]
    assert len(lins) == 6 * L + 1
    for x in lins:
        assert (1 << 16) <= c[f"{x}.scale_mant"] < (1 << 17)
        assert np.abs(c[f"{x}.wc"]).max() < 1 << 17 and np.abs(c[f"{x}.wc"]).max() >= 1 << 16
        assert set(np.unique(c[f"{x}.weight"])) <= {-1, 0, 1}
    for k in c:
        if k.endswith(".wp"):
            assert (1 << 16) <= np.abs(c[k]).max() < (1 << 17)


def test_rejects_float_checkpoint_and_bad_tokens(tmp_path, ckpt, fracs):
    path = tmp_path / "float.safetensors"
    export_checkpoint(_random_model(1, quantize=False), path, {})
    with pytest.raises(ValueError):
        IntRefModel(path, act_fracs=fracs)
    ir = IntRefModel(ckpt, act_fracs=fracs)
    ir.reset(2)
    with pytest.raises(ValueError):
        ir.step(np.array([1, 2, 3]))
    with pytest.raises(ValueError):
        ir.step(np.array([1, 256]))
    with pytest.raises(ValueError):
        IntFormats(act_frac=4)


def test_saturation_is_counted_and_clamps(ckpt, tokens, fracs):
    """A residual format too narrow for the model saturates; the trace counts it and values clamp."""
    ir = IntRefModel(ckpt, formats=IntFormats(h_bits=19), act_fracs=fracs)   # range +-0.25
    ir.reset(B)
    total = 0
    for tok in tokens:
        _, tr = ir.step(tok, trace=True)
        total += sum(tr["saturations"].values())
        for h in tr["h"]:
            assert h.min() >= -(1 << 18) and h.max() <= (1 << 18) - 1
    assert total > 0


def test_eval_pipeline_on_tiny_model(ckpt, fracs):
    """models.eval on synthetic sequences: the integer bpb tracks the float one; table renders."""
    from models.eval import eval_intref, eval_torch, markdown_table

    seqs = np.random.default_rng(7).integers(0, 256, size=(3, 10))
    bpb, rec = eval_torch(ckpt, seqs, record=True)
    r = eval_intref(IntRefModel(ckpt, act_fracs=fracs), seqs, rec)
    assert abs(r["bpb"] - bpb) <= 0.02 * bpb
    assert r["top1_agreement"] >= 0.8 and r["saturated_elements_total"] == 0
    assert len(r["hidden_rel_l2_mean"]) == L + 1 and r["hidden_rel_l2_mean"][0] < 1e-4
    table = markdown_table({"ternary": {"bpb": bpb}, "intref": r})
    assert table.count("\n") == 3 and "intref" in table


def test_golden_vectors_round_trip(tmp_path, ckpt, fracs):
    from safetensors.numpy import load_file, save_file

    ir = IntRefModel(ckpt, act_fracs=fracs)
    g = ir.golden_vectors([5, 6, 7])
    save_file(g, str(tmp_path / "golden.safetensors"))
    back = load_file(str(tmp_path / "golden.safetensors"))
    assert set(back) == set(g) and all(np.array_equal(back[k], g[k]) for k in g)
    ir.reset(1)
    for t, tok in enumerate([5, 6, 7]):
        np.testing.assert_array_equal(back[f"step{t}/logits"], ir.step(tok))
    np.testing.assert_array_equal(back["const/table.sigmoid"], ir.constants()["table.sigmoid"])
