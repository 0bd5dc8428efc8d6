"""Every ternary GEMV of a real model, run on the GEMV engine, equals the integer reference."""

from pathlib import Path

import numpy as np
import pytest

from hw.gemv import GemvEngine
from hw.pe.adder_tree import acc_width
from models.checkpoint import bitlinear_names, load_checkpoint
from models.intref import IntRefModel
from sim.cocotb_run import ROOT, run_cocotb
from sw.compiler import ModelTooLarge, layout_weights

CHECKPOINT = ROOT / "models" / "checkpoints" / "mmfree-tiny.safetensors"
LANES, ROWS = 32, 8


def _jobs(ckpt, prompt: bytes):
    """Weight image plus, per token and BitLinear, (slot, x_q, acc) from the reference's trace."""
    names = bitlinear_names(ckpt.config)
    image = layout_weights({n: ckpt.tensors[f"{n}.weight"] for n in names}, LANES, ROWS)
    ref = IntRefModel(ckpt)
    ref.reset(1)
    jobs, xq, acc = [], [], []
    for t, tok in enumerate(prompt):
        _, tr = ref.step(np.array([tok]), trace=True)
        for n in names:
            layer, block, proj = _trace_key(n)
            d = tr if layer is None else tr["layers"][layer]
            x = d[f"{block}.{proj}.x_q"][0]
            a = d[f"{block}.{proj}.acc"][0]
            s = image.slots[n]
            jobs.append((t, s.base, s.groups, s.chunks, s.out_features, s.in_features))
            xq.append(x)
            acc.append(a)
    return image, np.array(jobs, np.int64), np.concatenate(xq).astype(np.int64), np.concatenate(acc).astype(np.int64)


def _trace_key(name: str):
    if name == "lm_head":
        return None, "head", "lm_head"
    parts = name.split(".")  # model.layers.N.attn.i_proj
    return int(parts[2]), parts[3], parts[4]


def test_layout_refuses_too_large():
    w = np.zeros((64, 64), np.int8)
    with pytest.raises(ModelTooLarge, match="weight memory holds 10"):
        layout_weights({"a": w}, LANES, ROWS, depth=10)
    with pytest.raises(ModelTooLarge, match="at most 32"):
        layout_weights({"a": w}, LANES, ROWS, k_max=32)


def test_model_gemvs_on_engine(tmp_path):
    ckpt = load_checkpoint(CHECKPOINT)
    k_max = max(ckpt.config.d_model, ckpt.config.d_ff)
    image, jobs, xq, acc = _jobs(ckpt, b"To be")
    data = tmp_path / "gemv_model.npz"
    np.savez(data, words=image.word_bytes(), jobs=jobs, xq=xq, acc=acc)
    depth = 1 << (len(image.words) - 1).bit_length()
    e = GemvEngine(lanes=LANES, rows=ROWS, weight_depth=depth, k_max=k_max)
    out = tmp_path / "cycles.txt"
    p = {"data": str(data), "lanes": LANES, "rows": ROWS, "k_max": k_max, "acc_width": acc_width(k_max),
         "waw": len(e.cmd.payload.base), "gw": len(e.cmd.payload.groups), "cw": len(e.cmd.payload.chunks),
         "cycles_out": str(out)}
    run_cocotb(e, toplevel="gemv_model", test_module="sim.tb_gemv_model", params=p)
    cycles = [int(c) for c in out.read_text().split()]
    # One weight word per cycle: a token's GEMVs take the image's words plus the engine's fixed
    # latency per matrix (the testbench issues them one after another).
    n_mat = len(image.slots)
    assert all(c == len(image.words) + e.latency * n_mat for c in cycles), (cycles, len(image.words), e.latency)
